"""The bench's sizes (full and quick) and where things are: the repository, the
bellhook command, the peer's virtualenv."""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
# The bellhook command line; BELLHOOK_BENCH_COMMAND replaces it (e.g. a launcher that
# patches something first) to compare a change against the same harness.
BELLHOOK = shlex.split(os.environ.get("BELLHOOK_BENCH_COMMAND", "")) or [
    str(Path(PY).parent / "bellhook")
]
PEER_PY = BENCH / ".venv-peer" / "bin" / "python"
SCENARIOS = ("throughput", "latency", "isolation", "backlog", "ingest", "postgres")


@dataclass(frozen=True)
class Config:
    quick: bool
    out: Path
    tp_events: int  # scenario 1: events to one webhook
    fan_events: int  # scenario 1: events to each of fan_webhooks webhooks
    fan_webhooks: int
    peer_events: int
    peer_fan_events: int
    peer_cap: float  # seconds the peer may deliver before it is stopped
    drain_cap: float
    steady_rate: float
    steady_seconds: float
    warmup_seconds: float
    isolation_timeout: float
    backlog_events: int  # x backlog_webhooks deliveries
    backlog_webhooks: int
    backlog_cap: float
    ingest_single_n: int
    ingest_single_seconds: float
    ingest_batch_n: int
    kafka_n: int  # scenario 7: events produced to a topic and consumed
    pg_events: int = 10_000
    pg_fan_events: int = 1_000
    arrival_wait: float = 15.0  # after the load: how long stragglers may take to arrive
    max_concurrency: int = 512
    per_webhook: int = 16
    pg_url: str | None = None
    with_peer: bool = True


def config(quick: bool, pg_url: str | None) -> Config:
    if quick:
        return Config(
            quick=True,
            out=BENCH / "results" / "quick",
            tp_events=1_500,
            fan_events=150,
            fan_webhooks=10,
            peer_events=0,
            peer_fan_events=0,
            peer_cap=0,
            drain_cap=60,
            steady_rate=200,
            steady_seconds=3,
            warmup_seconds=1,
            isolation_timeout=1,
            backlog_events=800,
            backlog_webhooks=10,
            backlog_cap=60,
            ingest_single_n=3_000,
            ingest_single_seconds=2,
            ingest_batch_n=5_000,
            kafka_n=5_000,
            pg_events=1_500,
            pg_fan_events=150,
            pg_url=pg_url,
            with_peer=False,
        )
    return Config(
        quick=False,
        out=BENCH / "results",
        tp_events=20_000,
        fan_events=2_000,
        fan_webhooks=10,
        peer_events=600,
        peer_fan_events=60,
        peer_cap=30,
        drain_cap=180,
        steady_rate=200,
        steady_seconds=30,
        warmup_seconds=2,
        isolation_timeout=5,
        backlog_events=20_000,
        backlog_webhooks=10,
        backlog_cap=130,
        ingest_single_n=30_000,
        ingest_single_seconds=10,
        ingest_batch_n=50_000,  # 50 calls of 1,000: one stall does not decide the rate
        kafka_n=100_000,
        pg_events=10_000,
        pg_fan_events=1_000,
        pg_url=pg_url,
        with_peer=PEER_PY.exists(),
    )
