"""The bench's plots, from bench/results/*.json (matplotlib, Agg backend).

Runs with the bench-only virtualenv, which has matplotlib::

    bench/.venv-peer/bin/python bench/plots.py bench/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend


def load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return None if "error" in data or "skipped" in data else data


def rate(node: Any, *path: str) -> float | None:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


def throughput(out: Path) -> str | None:
    tp = load(out, "throughput")
    if not tp:
        return None
    pg = load(out, "postgres") or {}
    workloads = [w for w in ("single", "fanout") if w in tp]
    series = {
        "bellhook (SQLite)": [rate(tp, w, "drain", "rate") for w in workloads],
        "bellhook (SQLite), 2 processes": [
            rate(tp, w, "two_processes", "drain", "rate") for w in workloads
        ],
        "bellhook (PostgreSQL)": [rate(pg, w, "drain", "rate") for w in workloads],
        "ceiling, aiohttp (asyncio)": [rate(tp, w, "ceiling_asyncio", "rate") for w in workloads],
        "ceiling, aiohttp (uvloop)": [rate(tp, w, "ceiling_uvloop", "rate") for w in workloads],
        "ceiling, aiohttp (uvloop), 2 processes": [
            rate(tp, w, "ceiling_uvloop_2p", "rate") for w in workloads
        ],
        "django-outbound-webhooks": [rate(tp, w, "peer", "drain", "rate") for w in workloads],
    }
    series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(workloads))]
        ys = [v or 0 for v in values]
        bars = ax.bar(xs, ys, width, label=label)
        for bar, v in zip(bars, values, strict=True):
            if v:
                ax.annotate(
                    f"{v:,.0f}" if v >= 100 else f"{v:.1f}",
                    (bar.get_x() + bar.get_width() / 2, v),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    names = {
        "single": f"1 webhook, {tp['single']['deliveries']:,} deliveries",
        "fanout": f"10 webhooks, {tp['fanout']['deliveries']:,} deliveries",
    }
    ax.set_xticks(range(len(workloads)), [names[w] for w in workloads])
    ax.set_yscale("log")
    ax.set_ylim(bottom=1)
    ax.set_ylabel("deliveries per second (log)")
    ax.set_title("Scenarios 1-3: draining a backlog (first to last arrival)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def latency(out: Path) -> str | None:
    lat, iso = load(out, "latency"), load(out, "isolation")
    if not lat and not iso:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for data, label in (
        (lat, "scenario 4: 1 healthy webhook"),
        (iso, "scenario 5: healthy webhooks beside 5 hanging ones"),
    ):
        if data:
            points = [(q, v) for q, v in data["cdf_ms"] if v is not None]
            p99 = data["latency_ms"]["p99"]
            text = f"{p99:,.1f} ms" if p99 is not None else "never arrived"
            ax.plot(
                [max(v, 0.01) for _, v in points],
                [q for q, _ in points],
                label=f"{label} (p99 {text})",
            )
    ax.axvline(10, color="grey", linestyle="--", linewidth=1, label="target p99 ≤ 10 ms")
    ax.set_xscale("log")
    ax.set_xlabel("202 returned → receiver got it (ms, log)")
    ax.set_ylabel("percentile")
    ax.set_title(f"Scenarios 4-5: latency at {(lat or iso or {}).get('rate', 200):g} events/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def backlog(out: Path) -> str | None:
    bk = load(out, "backlog")
    if not bk or not bk["drain"].get("series"):
        return None
    series = bk["drain"]["series"]
    ts = [p["t"] for p in series]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(ts, [p["rss_mb"] for p in series], color="tab:red", label="worker RSS (MB)")
    ax.axhline(200, color="tab:red", linestyle="--", linewidth=1, label="target ≤ 200 MB")
    ax.set_xlabel("seconds since `bellhook worker` started")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(0, max(220, max(p["rss_mb"] for p in series) * 1.1))
    ax2 = ax.twinx()
    ax2.plot(ts, [p["delivered"] for p in series], color="tab:blue", label="delivered")
    ax2.set_ylabel("deliveries received")
    total = bk["webhooks"] * bk["events"]
    ax.set_title(f"Scenario 6: draining {total:,} pending deliveries")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center right")
    fig.tight_layout()
    path = out / "backlog.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def ingest(out: Path) -> str | None:
    ing = load(out, "ingest")
    if not ing:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = ["POST /api/events\n(32 in flight)", "POST /api/events/batch\n(1,000 a call)"]
    values = [ing["single"]["events_per_s"], ing["batch"]["events_per_s"]]
    targets = [1500, 20000]
    if (ing.get("kafka") or {}).get("events_per_s"):
        labels.append("Kafka topic\n(bellhook consume)")
        values.append(ing["kafka"]["events_per_s"])
        targets.append(20000)
    bars = ax.bar(labels, values, color="tab:blue", label="measured")
    ax.scatter(labels, targets, marker="_", s=2000, color="black", label="target", zorder=3)
    for bar, v in zip(bars, values, strict=True):
        ax.annotate(f"{v:,.0f}/s", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom")
    ax.set_yscale("log")
    ax.set_ylim(bottom=10)
    ax.set_ylabel("events accepted per second (log)")
    ax.set_title("Scenario 7: ingest (SQLite, 1 webhook)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / "ingest.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    made = [name for plot in (throughput, latency, backlog, ingest) if (name := plot(out))]
    print(f"plots written to {out}: {', '.join(made) or 'none'}")


if __name__ == "__main__":
    main()
