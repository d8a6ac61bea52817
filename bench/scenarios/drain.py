"""Draining a stored backlog, timed by the receiver: bellhook's worker, the bare
client's ceiling, and the peer."""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    proc_sample,
)
from bench.config import BELLHOOK, BENCH, PEER_PY, PY, Config
from bench.procs import (
    Proc,
    Receiver,
    bellhook_env,
    create_admin_key,
    delivery_counts,
    loadgen,
    register_webhooks,
    run_child,
    run_children,
    start_api,
)


@dataclass
class Drain:
    expected: int
    delivered: int = 0
    rate: float = 0.0
    seconds: float = 0.0
    cpu_per_1000: float | None = None
    peak_rss_mb: float = 0.0
    rss_at_first_mb: float | None = None
    rss_at_end_mb: float = 0.0
    startup_seconds: float | None = None  # process start -> first arrival
    complete: bool = False
    series: list[tuple[float, int, float, float]] = field(default_factory=list)

    def as_dict(self, *, with_series: bool = False) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "series"}
        if with_series:
            d["series"] = [
                {"t": round(t, 3), "delivered": n, "rss_mb": round(r, 1), "cpu": round(c, 2)}
                for t, n, r, c in self.series
            ]
        return d


def measure_drain(
    receiver: Receiver, proc: Proc, expected: int, *, cap: float, every: float = 0.1
) -> Drain:
    """Watch ``proc`` deliver ``expected`` requests to ``receiver`` (first -> last arrival).

    CPU per 1,000 is the process's user+system time from the first arrival to the last,
    divided by what arrived in between; RSS is sampled all along and VmHWM read last.
    """
    drain = Drain(expected)
    started = time.monotonic()
    cpu0 = count0 = None
    last_sample = proc_sample(proc.pid)
    while True:
        exited = not proc.alive()
        count, _, _ = receiver.count()
        if exited:
            drain.delivered = count
            drain.complete = count >= expected
            if not drain.complete:
                raise RuntimeError(f"{proc.name} exited before the end:\n{proc.tail()}")
            break
        try:
            sample = proc_sample(proc.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        last_sample = sample
        elapsed = time.monotonic() - started
        drain.series.append((elapsed, count, sample.rss_kb / 1024, sample.cpu))
        if count and cpu0 is None:
            cpu0, count0 = sample.cpu, count
            drain.rss_at_first_mb = sample.rss_kb / 1024
            drain.startup_seconds = elapsed
        drain.delivered = count
        if count >= expected:
            drain.complete = True
            break
        if elapsed > cap:
            break
        time.sleep(every)
    drain.peak_rss_mb = last_sample.hwm_kb / 1024
    drain.rss_at_end_mb = last_sample.rss_kb / 1024
    n, first, last = receiver.count()
    drain.delivered = n
    if n > 1 and first is not None and last is not None and last > first:
        drain.seconds = last - first
        drain.rate = (n - 1) / (last - first)
    if cpu0 is not None and count0 is not None and drain.delivered > count0:
        drain.cpu_per_1000 = (last_sample.cpu - cpu0) / (drain.delivered - count0) * 1000
    return drain


def bellhook_drain(
    cfg: Config,
    tag: str,
    db_url: str,
    tmp: Path,
    webhooks: int,
    events: int,
    *,
    processes: int = 1,
) -> dict[str, Any]:
    """Scenario 1 for one workload: ingest with serve --no-worker, then time a worker
    (``worker --processes N``: the same limits, split between N processes)."""
    env = bellhook_env(cfg, db_url)
    receiver = Receiver(tmp)
    key = create_admin_key(env)
    api = start_api(env, tmp, key, worker=False)
    names = [f"wh{i}" for i in range(webhooks)]
    receiver.secrets(register_webhooks(api, receiver.base, names))
    ingest = loadgen(
        "batch", api, timeout=cfg.drain_cap, n=events, batch=1000, concurrency=2, prefix=f"{tag}-"
    )
    api.proc.stop()
    receiver.reset()
    worker = Proc(
        "worker", [*BELLHOOK, "worker", "--processes", str(processes)], env=env, logdir=tmp
    )
    drain = measure_drain(receiver, worker, events * webhooks, cap=cfg.drain_cap)
    time.sleep(0.3)  # the last outcomes are written
    worker.stop()
    stats = receiver.stats()
    receiver.stop()
    return {
        "webhooks": webhooks,
        "events": events,
        "processes": processes,
        "deliveries": events * webhooks,
        "in_flight_limit": min(cfg.max_concurrency, cfg.per_webhook * webhooks),
        "ingest": ingest,
        "drain": drain.as_dict(),
        "receiver": {
            k: stats[k]
            for k in ("unique_ids", "unique_deliveries", "bad_signatures", "body_bytes_mean")
        },
        "duplicates": stats["count"] - stats["unique_deliveries"],
        "db_after": delivery_counts(db_url),
    }


def ceiling_run(
    cfg: Config,
    tmp: Path,
    webhooks: int,
    n: int,
    loop: str,
    body_bytes: float,
    *,
    processes: int = 1,
) -> dict[str, Any]:
    """Scenario 2: the bare client; with ``processes`` > 1, that many at once, the
    requests and the requests in flight split between them (as ``worker --processes``
    splits its limits)."""
    receiver = Receiver(tmp)
    targets = [(f"ceil{i}", f"ceiling-secret-{i}-{secrets.token_hex(8)}") for i in range(webhooks)]
    receiver.secrets({name: ("bellhook", s) for name, s in targets})
    concurrency = min(cfg.max_concurrency, cfg.per_webhook * webhooks)
    urls = json.dumps([[receiver.url("ok", name), s] for name, s in targets])
    argvs = [
        [
            PY,
            "-m",
            "bench.ceiling",
            "--targets",
            urls,
            "--n",
            str(share),
            "--concurrency",
            str(in_flight),
            "--loop",
            loop,
            "--prefix",
            f"ceil{p}-",
        ]
        for p, (share, in_flight) in enumerate(
            zip(shares_of(n, processes), shares_of(concurrency, processes), strict=True)
        )
    ]
    results, cpu = run_children(argvs, timeout=cfg.drain_cap)
    stats = receiver.stats()
    receiver.stop()
    rate = (stats["count"] - 1) / (stats["last"] - stats["first"]) if stats["count"] > 1 else 0.0
    return {
        "loop": loop,
        "processes": processes,
        "requests": n,
        "concurrency": concurrency,
        "rate": rate,
        "received": stats["count"],
        "cpu_per_1000": cpu / n * 1000,
        "errors": sum(r["errors"] for r in results),
        "bad_signatures": stats["bad_signatures"],
        "body_bytes_mean": stats["body_bytes_mean"],
        "bellhook_body_bytes_mean": body_bytes,
    }


def shares_of(n: int, parts: int) -> list[int]:
    """``n`` split into ``parts`` shares that add up to it, the first ones larger by one
    where it does not divide: as ``worker --processes`` splits its limits (the harness
    runs bellhook as a command, so it does not import it)."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def peer_run(cfg: Config, tmp: Path, webhooks: int, events: int) -> dict[str, Any]:
    """Scenario 3: the same workload through django-outbound-webhooks' deliver_events."""
    env = dict(
        os.environ, BENCH_PEER_DB=str(tmp / "peer.db"), PYTHONPATH=str(BENCH / "peer_project")
    )
    env["DJANGO_SETTINGS_MODULE"] = "bench_peer.settings"
    receiver = Receiver(tmp)
    names = [f"peer{i}" for i in range(webhooks)]
    setup = run_child(
        [
            str(PEER_PY),
            str(BENCH / "peer.py"),
            "setup",
            "--targets",
            json.dumps([[n, receiver.url("ok", n)] for n in names]),
            "--events",
            str(events),
        ],
        env=env,
        timeout=300,
    )
    receiver.secrets({n: ("standard", s) for n, s in setup["secrets"].items()})
    argv = [str(PEER_PY), str(BENCH / "peer_project" / "manage.py"), "deliver_events", "--once"]
    relay = Proc("peer-deliver", argv, env=env, logdir=tmp)
    drain = measure_drain(receiver, relay, events * webhooks, cap=cfg.peer_cap, every=0.25)
    relay.stop(10)
    stats = receiver.stats()
    receiver.stop()
    return {
        "webhooks": webhooks,
        "events": events,
        "deliveries_owed": events * webhooks,
        "fire_seconds": setup["fire_seconds"],
        "drain": drain.as_dict(),
        "stopped_at_cap": not drain.complete,
        "bad_signatures": stats["bad_signatures"],
        "body_bytes_mean": stats["body_bytes_mean"],
        "duplicates": stats["count"] - stats["unique_deliveries"],
    }
