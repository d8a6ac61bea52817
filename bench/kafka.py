"""Kafka roles of the bench (127.0.0.1 only): fill a topic, or read it with a bare
consumer loop of the same client bellhook uses, and time it from the first message.

    python -m bench.kafka produce --bootstrap 127.0.0.1:PORT --topic T --n 100000
    python -m bench.kafka bare --bootstrap 127.0.0.1:PORT --topic T --n 100000 --group G

The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from confluent_kafka import Consumer, Producer

from bench.common import event_payload

# As bench.scenarios.kafka gives `bellhook consume`: a short session timeout, so the
# group's join is short.
CLIENT_OPTIONS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def produce(bootstrap: str, topic: str, n: int, prefix: str) -> dict[str, Any]:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10})
    started = time.perf_counter()
    for i in range(n):
        value = json.dumps(event_payload(f"{prefix}{i}")).encode()
        while True:
            try:
                producer.produce(topic, value, str(i).encode())
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(120)
    return {"produced": n - left, "seconds": time.perf_counter() - started}


def bare(bootstrap: str, topic: str, n: int, group: str, batch: int) -> dict[str, Any]:
    """Read ``n`` messages in batches as bellhook's consumer does, touching each value,
    storing nothing; timed from the first message, so the group's join is left out."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **CLIENT_OPTIONS,
        }
    )
    consumer.subscribe([topic])
    joined = time.perf_counter()
    seen = size = 0
    first = last = 0.0
    while seen < n:
        for message in consumer.consume(batch, 1.0):
            if message.error() is not None:
                continue
            if not seen:
                first = time.perf_counter()
            size += len(message.value())
            seen += 1
        last = time.perf_counter()
    consumer.close()
    return {
        "messages": seen,
        "bytes": size,
        "join_seconds": first - joined,
        "events_per_s": (seen - 1) / (last - first) if last > first else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("produce", "bare"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--group", default="bench-bare")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--prefix", default="kafka-")
    args = parser.parse_args()
    if not args.bootstrap.startswith("127.0.0.1:"):
        raise SystemExit("the bench talks to 127.0.0.1 only")
    if args.mode == "produce":
        result = produce(args.bootstrap, args.topic, args.n, args.prefix)
    else:
        result = bare(args.bootstrap, args.topic, args.n, args.group, args.batch)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
