"""Scenario 6: 200,000 pending deliveries, the worker's memory while it drains them."""

from __future__ import annotations

import time
from typing import Any

from bench.common import (
    HOST,
    free_port,
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
from bench.scenarios.drain import measure_drain


def scenario_backlog(cfg: Config) -> dict[str, Any]:
    webhooks, events = cfg.backlog_webhooks, cfg.backlog_events
    total = webhooks * events
    log(f"backlog: {total:,} pending deliveries ({events:,} events x {webhooks} webhooks)")
    with workdir("backlog") as tmp:
        db_url = sqlite_url(tmp)
        env = bellhook_env(cfg, db_url)
        port = free_port()  # the receiver's, down while the backlog builds up
        key = create_admin_key(env)
        api = start_api(env, tmp, key, worker=False)
        names = [f"wh{i}" for i in range(webhooks)]
        keys = register_webhooks(api, f"http://{HOST}:{port}", names)
        ingest = loadgen(
            "batch", api, timeout=600, n=events, batch=1000, concurrency=2, prefix="bk-"
        )
        api.proc.stop()
        pending = delivery_counts(db_url)
        receiver = Receiver(tmp, port=port)
        receiver.secrets(keys)
        worker = Proc("worker", [*BELLHOOK, "worker"], env=env, logdir=tmp)
        drain = measure_drain(receiver, worker, total, cap=cfg.backlog_cap, every=0.25)
        time.sleep(0.3)
        worker.stop()
        stats = receiver.stats()
        receiver.stop()
        db_size = sum(p.stat().st_size for p in tmp.glob("bellhook.db*"))
    log(f"  peak RSS {drain.peak_rss_mb:.0f} MB, drain {drain.rate:,.0f}/s")
    return {
        "webhooks": webhooks,
        "events": events,
        "pending_before": pending,
        "ingest": ingest,
        "drain": drain.as_dict(with_series=True),
        "bad_signatures": stats["bad_signatures"],
        "duplicates": stats["count"] - stats["unique_deliveries"],
        "db_bytes_after": db_size,
    }
