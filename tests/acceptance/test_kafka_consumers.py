"""``bellhook consume`` processes against a real Kafka-protocol broker (Tansu): killed
mid-stream, sharing a group, held back by the backlog, stopped with SIGTERM. Nothing is
lost and nothing fans out twice; receivers count every (event, webhook) they get."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import func, select

from bellhook.config import Settings
from bellhook.runtime import Runtime, open_runtime
from bellhook.store.tables import deliveries, events
from tests.broker import TEST_CLIENT_OPTIONS, Broker
from tests.support import (
    Deliver,
    Hit,
    Receiver,
    Server,
    Start,
    admin_webhook,
    bellhook_env,
    create_webhook,
    eventually,
    free_port,
    scrape,
    value,
)

pytestmark = pytest.mark.timeout(240)
JOIN_WAIT = 90.0  # a group's first join and a rebalance (seconds)


def consumer_env(database_url: str, broker: Broker, topic: str, **extra: str) -> dict[str, str]:
    return bellhook_env(
        BELLHOOK_DATABASE_URL=database_url,
        BELLHOOK_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
        BELLHOOK_KAFKA_TOPICS=topic,
        BELLHOOK_KAFKA_GROUP=f"g-{topic}",
        BELLHOOK_KAFKA_OPTIONS=TEST_CLIENT_OPTIONS,
        BELLHOOK_LOG_FORMAT="json",
        **extra,
    )


@pytest.fixture
async def store(make_settings: Callable[..., Settings]) -> AsyncIterator[Runtime]:
    """The test's own view of the database the consumers write to."""
    async with open_runtime(make_settings()) as rt:
        yield rt


async def counts(rt: Runtime) -> tuple[int, int]:
    """(events, deliveries) stored."""
    async with rt.db.read() as conn:
        n_events = (await conn.execute(select(func.count()).select_from(events))).scalar_one()
        n_deliveries = (
            await conn.execute(select(func.count()).select_from(deliveries))
        ).scalar_one()
    return int(n_events), int(n_deliveries)


def logged(server: Server, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` that ``server`` printed so far."""
    lines = []
    for line in server._lines:
        if line.startswith("{") and f'"{event}"' in line:
            lines.append(json.loads(line))
    return lines


async def test_a_consumer_killed_mid_stream_loses_nothing_and_fans_out_nothing_twice(
    kafka_broker: Broker, database_url: str, store: Runtime, receivers: Start,
    serve: Callable[..., Any], tmp_path: Path,
) -> None:  # fmt: skip
    total = 4000
    topic = kafka_broker.topic(partitions=2)
    one, two = await receivers(), await receivers()
    now = datetime.now(UTC)
    for rx in (one, two):
        await admin_webhook(store, now, url=rx.url())
    # Half name their id, half are named by their position in the log.
    values = [
        {"event": "post.created", "data": {"n": i}, **({"id": f"k-{i}"} if i % 2 else {})}
        for i in range(total)
    ]
    kafka_broker.produce(topic, values, keys=[str(i).encode() for i in range(total)])
    # One event a transaction: a stream long enough to be cut in the middle.
    env = consumer_env(database_url, kafka_broker, topic, BELLHOOK_KAFKA_BATCH_SIZE="1")

    first = Server(env, tmp_path / "first.log", consume=[])
    await first.start()
    at_kill = await eventually(
        lambda: counts(store), lambda c: c[0] >= 300, timeout=JOIN_WAIT, what="300 events"
    )
    await first.kill()
    stored_at_kill = (await counts(store))[0]
    assert stored_at_kill < total, "the consumer finished before it could be killed"
    assert at_kill[0] <= stored_at_kill

    again = Server(env, tmp_path / "again.log", consume=[])
    await again.start()
    await eventually(
        lambda: counts(store),
        lambda c: c == (total, 2 * total),
        timeout=JOIN_WAIT,
        what="every event stored once, with two deliveries each",
    )
    await again.stop()

    # Now deliver them: each (event, webhook) arrives exactly once.
    await serve(worker=True, dev_mode=True, poll_interval=0.05)
    for rx in (one, two):
        hits = await rx.wait_until(lambda hs: len({h.event_id for h in hs}) >= total)
        assert len(hits) == total
        per_event = Counter(h.event_id for h in hits)
        assert set(per_event.values()) == {1}
    assert {h.event_id for h in one.hits} == {h.event_id for h in two.hits}


async def test_two_consumers_share_the_partitions_and_one_takes_over_from_the_other(
    kafka_broker: Broker, database_url: str, store: Runtime, tmp_path: Path
) -> None:
    topic = kafka_broker.topic(partitions=4)
    await admin_webhook(store, datetime.now(UTC))
    env = consumer_env(database_url, kafka_broker, topic)
    a = Server(env, tmp_path / "a.log", consume=[])
    b = Server(env, tmp_path / "b.log", consume=[])
    await a.start()
    await b.start()

    def partitions_of(server: Server) -> set[str]:
        """The partitions ``server`` holds now, from its assigned/revoked log lines."""
        held: set[str] = set()
        for line in server._lines:
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == "kafka.assigned":
                    held |= set(entry["partitions"])
                elif entry.get("event") == "kafka.revoked":
                    held -= set(entry["partitions"])
        return held

    async def shared() -> tuple[set[str], set[str]]:
        await a.wait_for_output("kafka.assigned", timeout=JOIN_WAIT)
        await b.wait_for_output("kafka.assigned", timeout=JOIN_WAIT)
        return partitions_of(a), partitions_of(b)

    held = await eventually(
        shared,
        lambda ab: bool(ab[0]) and bool(ab[1]) and len(ab[0] | ab[1]) == 4 and not ab[0] & ab[1],
        timeout=JOIN_WAIT,
        what="the four partitions shared between the two consumers",
    )
    assert held[0] | held[1] == {f"{topic}/{p}" for p in range(4)}

    batch = 400
    ids = [f"first-{i}" for i in range(batch)]
    kafka_broker.produce(
        topic,
        [{"event": "post.created", "id": i, "data": {}} for i in ids],
        keys=[i.encode() for i in ids],
    )
    await eventually(lambda: counts(store), lambda c: c == (batch, batch), timeout=JOIN_WAIT)

    await b.kill()
    more = [f"second-{i}" for i in range(batch)]
    kafka_broker.produce(
        topic,
        [{"event": "post.created", "id": i, "data": {}} for i in more],
        keys=[i.encode() for i in more],
    )
    await eventually(
        lambda: counts(store), lambda c: c == (2 * batch, 2 * batch), timeout=JOIN_WAIT,
        what="the second batch stored by the consumer left",
    )  # fmt: skip
    assert partitions_of(a) == {f"{topic}/{p}" for p in range(4)}
    await a.stop()
    stopped = logged(a, "kafka.stopped")
    assert stopped and stopped[-1]["stored"] >= batch  # it took the killed one's partitions


async def test_a_backlog_past_its_bound_pauses_consumption_until_it_drains(
    kafka_broker: Broker, database_url: str, delivering: Deliver, receivers: Start,
    tmp_path: Path,
) -> None:  # fmt: skip
    total, bound, batch = 200, 20, 5
    topic = kafka_broker.topic()
    revived_from = float("inf")  # the first request (by arrival) the receiver answers

    async def dead_until_revived(_rx: Receiver, _req: web.Request, hit: Hit) -> Any:
        return web.Response(status=200 if hit.seq >= revived_from else 503)

    rx = await receivers(dead_until_revived)
    setup = await delivering(retry_schedule=",".join(["0.5"] * 20))
    await create_webhook(setup.api, rx.url(), events=["post.created"])
    kafka_broker.produce(
        topic, [{"event": "post.created", "id": f"b-{i}", "data": {}} for i in range(total)]
    )
    env = consumer_env(
        database_url, kafka_broker, topic,
        BELLHOOK_KAFKA_MAX_BACKLOG=str(bound), BELLHOOK_KAFKA_BATCH_SIZE=str(batch),
    )  # fmt: skip
    metrics_port = free_port()
    consumer = Server(env, tmp_path / "consumer.log", consume=["--metrics-port", str(metrics_port)])
    await consumer.start()
    await consumer.wait_for_output("kafka.paused", timeout=JOIN_WAIT)
    paused = logged(consumer, "kafka.paused")[0]
    assert paused["reason"] == "backlog" and paused["pending"] > bound

    # Its metrics port says so: paused, and most of the topic behind the committed offset.
    lag = ("bellhook_kafka_consumer_lag", (("partition", "0"), ("topic", topic)))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}") as ops:
        samples = await eventually(
            lambda: scrape(ops),
            lambda s: lag in s and total - s[lag] > bound,  # measured since the pause
            what="the lag measured while paused",
        )
        assert value(samples, "bellhook_kafka_paused") == 1
        assert total - samples[lag] <= bound + 2 * batch  # what was read and stored
        unready = (await ops.get("/readyz")).json()
    assert unready["success"] is True  # paused by backpressure is still ready
    assert unready["data"]["checks"]["kafka"] == "ok"

    async def pending() -> int:
        return await setup.svc.runtime.deliveries.pending()

    # Paused: the dead receiver keeps every delivery pending, and no more are read. Each
    # batch counts the backlog again, so it is at most one batch past the bound.
    for _ in range(3):  # three more rounds of the dead receiver failing them
        await rx.wait_for_count(len(rx.hits) + 1)
        assert await pending() <= bound + batch
    assert rx.hits and {h.event_id for h in rx.hits} < {f"b-{i}" for i in range(total)}

    # The receiver comes back: the backlog drains, and consumption resumes.
    revived_from = len(rx.hits)
    await consumer.wait_for_output("kafka.resumed", timeout=JOIN_WAIT)
    everything = {f"b-{i}" for i in range(total)}
    await rx.wait_until(
        lambda hs: {h.event_id for h in hs if h.seq >= revived_from} >= everything,
        timeout=JOIN_WAIT,
        what="every event answered 200",
    )
    await consumer.stop()


async def test_sigterm_finishes_commits_and_leaves_the_group(
    kafka_broker: Broker, database_url: str, store: Runtime, tmp_path: Path
) -> None:
    topic = kafka_broker.topic(partitions=2)
    await admin_webhook(store, datetime.now(UTC))
    total = 300
    kafka_broker.produce(
        topic,
        [{"event": "post.created", "data": {"n": i}} for i in range(total)],
        keys=[str(i).encode() for i in range(total)],
    )
    consumer = Server(
        consumer_env(database_url, kafka_broker, topic), tmp_path / "c.log", consume=[]
    )
    await consumer.start()
    await eventually(lambda: counts(store), lambda c: c == (total, total), timeout=JOIN_WAIT)
    assert consumer.proc is not None
    consumer.proc.send_signal(signal.SIGTERM)
    assert await consumer.wait() == 0
    assert logged(consumer, "kafka.stopped")[-1]["stored"] == total
    # Everything it stored is committed: the group starts past it next time.
    committed = kafka_broker.committed(f"g-{topic}", topic, 2)
    assert sum(committed) == total, committed
