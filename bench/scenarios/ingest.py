"""Scenario 7: ingest through ``POST /api/events``, ``POST /api/events/batch`` and a
Kafka topic."""

from __future__ import annotations

from typing import Any

from bench.common import (
    HOST,
    free_port,
    proc_sample,
)
from bench.config import Config
from bench.host import log
from bench.procs import (
    bellhook_env,
    create_admin_key,
    loadgen,
    register_webhooks,
    sqlite_url,
    start_api,
    workdir,
)
from bench.scenarios.kafka import kafka_ingest


def scenario_ingest(cfg: Config) -> dict[str, Any]:
    log("ingest: POST /api/events (32 in flight) and POST /api/events/batch, 1 webhook")
    out: dict[str, Any] = {}
    with workdir("ingest") as tmp:
        db_url = sqlite_url(tmp)
        env = bellhook_env(cfg, db_url)
        receiver_base = f"http://{HOST}:{free_port()}"  # never called: no worker
        key = create_admin_key(env)
        api = start_api(env, tmp, key, worker=False)
        register_webhooks(api, receiver_base, ["wh0"])
        s0 = proc_sample(api.proc.pid)
        out["single"] = loadgen(
            "single",
            api,
            timeout=cfg.ingest_single_seconds + 120,
            n=cfg.ingest_single_n,
            concurrency=32,
            duration=cfg.ingest_single_seconds,
            prefix="one-",
        )
        s1 = proc_sample(api.proc.pid)
        out["batch"] = loadgen(
            "batch",
            api,
            timeout=300,
            n=cfg.ingest_batch_n,
            batch=1000,
            concurrency=2,
            prefix="many-",
        )
        s2 = proc_sample(api.proc.pid)
        api.proc.stop()
        out["kafka"] = kafka_ingest(cfg, tmp, db_url, tmp / "bellhook.db")
    out["single"]["serve_cpu_per_1000"] = (
        (s1.cpu - s0.cpu) / max(out["single"]["accepted"], 1) * 1000
    )
    out["batch"]["serve_cpu_per_1000"] = (s2.cpu - s1.cpu) / max(out["batch"]["accepted"], 1) * 1000
    one, many = out["single"]["events_per_s"], out["batch"]["events_per_s"]
    kafka = out["kafka"]
    log(
        f"  single {one:,.0f}/s, batch {many:,.0f}/s; Kafka {kafka['events_per_s'] or 0:,.0f}/s "
        f"(bare consumer {kafka['bare'].get('events_per_s') or 0:,.0f}/s)"
    )
    return out
