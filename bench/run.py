"""The bench orchestrator: `make bench` (full) and `make bench-quick` (smoke).

Every role runs in a process of its own, on 127.0.0.1 only: bellhook (``serve`` and
``worker``), the receiver (``bench.receiver``), the load generator (``bench.loadgen``),
the ceiling client (``bench.ceiling``) and the peer (django-outbound-webhooks, from the
bench-only virtualenv). Each scenario gets a fresh temporary SQLite file (or a fresh
PostgreSQL database when ``BELLHOOK_BENCH_DATABASE_URL`` is set). Targets are printed
beside the measurements and never asserted: the exit status is 0 whenever every
scenario ran, 1 when one of them could not.

    .venv/bin/python -m bench.run [--quick] [--only throughput,latency,...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import BENCH, PEER_PY, SCENARIOS, Config, config
from bench.host import Noise, log, machine, wait_for_quiet
from bench.procs import Proc
from bench.scenarios.backlog import scenario_backlog
from bench.scenarios.ingest import scenario_ingest
from bench.scenarios.steady import scenario_isolation, scenario_latency
from bench.scenarios.throughput import scenario_postgres, scenario_throughput
from bench.table import markdown, table

RUNNERS: dict[str, Callable[[Config], dict[str, Any]]] = {
    "throughput": scenario_throughput,
    "latency": scenario_latency,
    "isolation": scenario_isolation,
    "backlog": scenario_backlog,
    "ingest": scenario_ingest,
    "postgres": scenario_postgres,
}


def plots(out: Path) -> None:
    if not PEER_PY.exists():
        log("plots skipped: bench/.venv-peer (matplotlib) is not installed; `make bench` makes it")
        return
    done = subprocess.run(
        [str(PEER_PY), str(BENCH / "plots.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        log(f"plots failed (the results are kept): {done.stderr[-500:]}")
    else:
        log(done.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke run (< 60 s)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    cfg = config(args.quick, os.environ.get("BELLHOOK_BENCH_DATABASE_URL") or None)
    if args.no_peer:
        cfg = Config(**{**cfg.__dict__, "with_peer": False})
    chosen = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; pick from {SCENARIOS}")
    cfg.out.mkdir(parents=True, exist_ok=True)
    # Other work on the machine (test suites...) skews timings: the bench's processes (all
    # children inherit it) get a higher priority when allowed (root), and the load that
    # remains is measured and printed beside the results.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    if not cfg.quick and not cfg.with_peer and not args.no_peer:
        log("peer skipped: bench/.venv-peer is missing (`make bench` creates it)")

    started = time.monotonic()
    results: dict[str, Any] = {"machine": machine(), "quick": cfg.quick}
    failed: list[str] = []
    for name in chosen:
        before = wait_for_quiet(2, window=0.3) if cfg.quick else wait_for_quiet(20)
        if before >= 0.15:
            log(f"note: other processes keep {before:.2f} cores busy; {name} runs anyway")
        t0 = time.monotonic()
        noise = Noise()
        try:
            results[name] = RUNNERS[name](cfg)
        except Exception as exc:
            failed.append(name)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{name} FAILED: {exc}\n{traceback.format_exc()}")
        finally:
            Proc.stop_all()
        results[name] = {
            **results[name],
            "scenario_seconds": round(time.monotonic() - t0, 1),
            "foreign_cpu_cores": round(noise.cores(), 3),
        }
        (cfg.out / f"{name}.json").write_text(json.dumps(results[name], indent=1) + "\n")
    results["total_seconds"] = round(time.monotonic() - started, 1)

    rows = table(results)
    summary = {"machine": results["machine"], "quick": cfg.quick, "rows": rows, "failed": failed}
    summary["total_seconds"] = results["total_seconds"]
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    md = markdown(rows)
    noise = ", ".join(f"{name} {results[name].get('foreign_cpu_cores', 0):.2f}" for name in chosen)
    md += f"\n\nOther processes' load during each scenario (cores, of {os.cpu_count()}): {noise}."
    (cfg.out / "summary.md").write_text(md + "\n")
    plots(cfg.out)
    m = results["machine"]
    print()
    print(
        f"bellhook bench ({'quick' if cfg.quick else 'full'}), {m['date']}, {m['nproc']} cores "
        f"{m['cpu_model']}, Python {m['python']}, {results['total_seconds']:.0f} s"
    )
    print(md)
    if failed:
        print(f"\nscenarios that could not run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        Proc.stop_all()
