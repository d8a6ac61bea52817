"""Scenarios 4 and 5: an open-loop steady rate through ``serve``, latency matched by
event id, and isolation beside hanging webhooks."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from bench.common import (
    percentile,
    proc_sample,
)
from bench.config import BELLHOOK, Config
from bench.host import log
from bench.procs import (
    Proc,
    Receiver,
    bellhook_env,
    create_admin_key,
    delivery_counts,
    loadgen,
    register_webhooks,
    sqlite_url,
    start_api,
    workdir,
)
from bench.table import ms


def latencies_of(
    steady_file: Path, arrivals: dict[str, list[Any]], routes: set[str], skip_before: float
) -> tuple[list[float], dict[str, Any]]:
    """accepted (202 received) -> arrived, per (event, webhook), first arrival only; and
    in the details, sent (request written) -> arrived.

    A delivery can arrive before its 202 does: serve hands a committed event to its
    dispatcher before the response goes out, so the first figure can be negative and
    is about 0 at low load. The second includes the API's own time and never is."""
    sent = json.loads(steady_file.read_text())
    accepted = {
        i: (s, a)
        for i, s, a, st in zip(
            sent["ids"], sent["sent"], sent["accepted"], sent["status"], strict=True
        )
        if st == 202
    }
    first: dict[tuple[str, str], float] = {}
    for event_id, route, t in zip(
        arrivals["ids"], arrivals["routes"], arrivals["times"], strict=True
    ):
        if route in routes and (event_id, route) not in first:
            first[(event_id, route)] = t
    latencies: list[float] = []
    from_send: list[float] = []
    api: list[float] = []
    # An event's first and last arrival among ``routes``, from the request: what fanning
    # out costs (the first one later than a lone delivery, the others after it). An event
    # missing a route has no last arrival (+inf, as in from_send_ms), and no first one if
    # nothing of it arrived.
    fan_first: list[float] = []
    fan_last: list[float] = []
    fan_missing = {"first": 0, "last": 0}
    missing = 0
    for event_id, (s, a) in accepted.items():
        if s < skip_before:
            continue
        api.append((a - s) * 1000)
        arrived: list[float] = []
        for route in routes:
            t = first.get((event_id, route))
            if t is None:
                missing += 1
            else:
                latencies.append((t - a) * 1000)
                from_send.append((t - s) * 1000)
                arrived.append(t)
        if len(routes) > 1:
            if arrived:
                fan_first.append((min(arrived) - s) * 1000)
            else:
                fan_missing["first"] += 1
            if len(arrived) == len(routes):
                fan_last.append((max(arrived) - s) * 1000)
            else:
                fan_missing["last"] += 1
    for values in (latencies, from_send, api, fan_first, fan_last):
        values.sort()
    details: dict[str, Any] = {
        "measured_pairs": len(latencies),
        "missing": missing,
        "negative": sum(1 for v in latencies if v < 0),
        "api_response_ms": summary_of(api),
        "from_send_ms": summary_of(from_send, censored=missing),
    }
    if len(routes) > 1:
        details["fan_out_ms"] = {
            "first": summary_of(fan_first, censored=fan_missing["first"]),
            "last": summary_of(fan_last, censored=fan_missing["last"]),
        }
    return latencies, details


def summary_of(values: list[float], *, censored: int = 0) -> dict[str, Any]:
    """Percentiles of sorted ``values``; ``censored`` more never arrived (count as +inf,
    reported as None: longer than the wait)."""
    full = values + [math.inf] * censored

    def finite(v: float) -> float | None:
        return None if math.isinf(v) or math.isnan(v) else v

    return {
        "n": len(full),
        "never_arrived": censored,
        "p50": finite(percentile(full, 50)),
        "p95": finite(percentile(full, 95)),
        "p99": finite(percentile(full, 99)),
        "max": finite(full[-1]) if full else None,
    }


def cdf(values: list[float], censored: int = 0) -> list[list[float | None]]:
    """About 200 points of the distribution, for the plots (None: never arrived)."""
    full = values + [math.inf] * censored
    qs = [q / 2 for q in range(0, 199)] + [99.5, 99.7, 99.9, 99.95, 100]
    points = [(q, percentile(full, q)) for q in qs]
    return [[q, None if math.isinf(v) else round(v, 3)] for q, v in points]


def steady_run(
    cfg: Config,
    tag: str,
    tmp: Path,
    kinds: list[str],
    extra_env: dict[str, str],
    hang: float,
    *,
    db_url: str | None = None,
    separate_worker: bool = False,
) -> dict[str, Any]:
    """The load through ``serve`` (its dispatcher inside, or with ``separate_worker`` a
    ``serve --no-worker`` and a ``bellhook worker`` beside it) on SQLite, or ``db_url``."""
    db_url = db_url or sqlite_url(tmp)
    env = bellhook_env(cfg, db_url, **extra_env)
    receiver = Receiver(tmp, hang=hang)
    key = create_admin_key(env)
    api = start_api(env, tmp, key, worker=not separate_worker)
    worker = Proc("worker", [*BELLHOOK, "worker"], env=env, logdir=tmp) if separate_worker else None
    names = [f"{kind}{i}" for i, kind in enumerate(kinds)]
    receiver.secrets(register_webhooks(api, receiver.base, names, kinds))
    time.sleep(0.5)
    steady_file = tmp / "steady.json"
    sample0, started = proc_sample(api.proc.pid), time.monotonic()
    sent = loadgen(
        "steady",
        api,
        timeout=cfg.steady_seconds + 120,
        rate=cfg.steady_rate,
        duration=cfg.steady_seconds,
        prefix=f"{tag}-",
        out=steady_file,
    )
    healthy = {n for n, k in zip(names, kinds, strict=True) if k == "ok"}
    expected = sent["accepted"] * len(healthy)
    deadline = time.monotonic() + cfg.arrival_wait
    while time.monotonic() < deadline:
        by_route = receiver.stats()["by_route"]
        if sum(by_route.get(n, 0) for n in healthy) >= expected:
            break
        time.sleep(0.2)
    sample1, ended = proc_sample(api.proc.pid), time.monotonic()
    arrivals = receiver.arrivals()
    stats = receiver.stats()
    api.proc.stop(30)
    if worker is not None:
        worker.stop(30)
    receiver.stop()
    skip_before = min(s for s in json.loads(steady_file.read_text())["sent"] if s) + (
        cfg.warmup_seconds
    )
    latencies, details = latencies_of(steady_file, arrivals, healthy, skip_before)
    return {
        "rate": cfg.steady_rate,
        "seconds": cfg.steady_seconds,
        "warmup_excluded_seconds": cfg.warmup_seconds,
        "webhooks": len(kinds),
        "hanging_webhooks": len(kinds) - len(healthy),
        "loadgen": sent,
        "latency_ms": summary_of(latencies, censored=details["missing"]),
        "arrival_wait_seconds": cfg.arrival_wait,
        "cdf_ms": cdf(latencies, details["missing"]),
        **details,
        "separate_worker": separate_worker,
        "serve_cpu_seconds": sample1.cpu - sample0.cpu,
        # How busy serve was (its one event loop, and the checkpointer's thread): the tail
        # of a queue grows steeply as its server nears a full core. The time includes the
        # load generator's start-up and the wait for the last arrivals.
        "serve_cores": (sample1.cpu - sample0.cpu) / (ended - started),
        "serve_peak_rss_mb": sample1.hwm_kb / 1024,
        "bad_signatures": stats["bad_signatures"],
        "by_route": stats["by_route"],
        "db_after": delivery_counts(db_url),
    }


def scenario_latency(cfg: Config) -> dict[str, Any]:
    log(f"latency: {cfg.steady_rate:g} events/s for {cfg.steady_seconds:g} s, 1 webhook")
    with workdir("latency") as tmp:
        result = steady_run(cfg, "lat", tmp, ["ok"], {}, hang=0)
    lm = result["latency_ms"]
    log(f"  p50 {ms(lm['p50'], cfg.arrival_wait)}, p99 {ms(lm['p99'], cfg.arrival_wait)}")
    return result


def scenario_isolation(cfg: Config) -> dict[str, Any]:
    timeout = cfg.isolation_timeout
    log(
        f"isolation: {cfg.steady_rate:g} events/s for {cfg.steady_seconds:g} s, "
        f"5 healthy + 5 hanging webhooks (timeout {timeout:g} s)"
    )
    settings = {"BELLHOOK_DELIVERY_TIMEOUT": str(timeout), "BELLHOOK_SHUTDOWN_GRACE": "2"}
    with workdir("isolation") as tmp:
        result = steady_run(cfg, "iso", tmp, ["ok", "hang"] * 5, settings, hang=timeout * 3)
    result["delivery_timeout"] = timeout
    lm = result["latency_ms"]
    log(f"  healthy p50 {ms(lm['p50'], cfg.arrival_wait)}, p99 {ms(lm['p99'], cfg.arrival_wait)}")
    if fan := result.get("fan_out_ms"):
        first, last = (ms(fan[k]["p99"], cfg.arrival_wait) for k in ("first", "last"))
        log(f"  an event's first / last healthy arrival: p99 {first} / {last} (from send)")
    # The reference the verdict is judged against: the same five healthy webhooks
    # without the hanging ones, to tell what the failures cost from what fanning out to
    # five webhooks costs.
    with workdir("isolation-ref") as tmp:
        ref = steady_run(cfg, "isoref", tmp, ["ok"] * 5, settings, hang=0)
    result["without_hanging"] = {
        k: ref[k] for k in ("latency_ms", "from_send_ms", "fan_out_ms", "serve_cores")
    }
    alone, beside = ref["from_send_ms"]["p99"], (result.get("from_send_ms") or {}).get("p99")
    log(
        f"  without the hanging ones: p99 {ms(alone, cfg.arrival_wait)} (from send)"
        + (f"; with ÷ without {beside / alone:.2f}x" if beside and alone else "")
    )
    return result
