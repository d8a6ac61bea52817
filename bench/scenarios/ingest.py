"""Scenario 7: ingest through ``POST /api/events`` and ``POST /api/events/batch``."""

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


def scenario_ingest(cfg: Config) -> dict[str, Any]:
    log("ingest: POST /api/events (32 in flight) and POST /api/events/batch, 1 webhook")
    out: dict[str, Any] = {}
    with workdir("ingest") as tmp:
        env = bellhook_env(cfg, sqlite_url(tmp))
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
    out["single"]["serve_cpu_per_1000"] = (
        (s1.cpu - s0.cpu) / max(out["single"]["accepted"], 1) * 1000
    )
    out["batch"]["serve_cpu_per_1000"] = (s2.cpu - s1.cpu) / max(out["batch"]["accepted"], 1) * 1000
    one, many = out["single"]["events_per_s"], out["batch"]["events_per_s"]
    log(f"  single {one:,.0f}/s, batch {many:,.0f}/s")
    return out
