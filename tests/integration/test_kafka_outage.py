"""The consumer through a database outage, on a real broker: it stops fetching, retries
with backoff, commits nothing it has not stored, and resumes by itself.

The outage is injected at the repository (the ingest raises ``StorageUnavailable``, as
the store does when its database is unreachable): the broker, the consumer group and
the offsets are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from bellhook.config import Settings
from bellhook.errors import StorageUnavailable
from bellhook.ingest.consumer import KafkaIngest
from bellhook.runtime import open_runtime
from tests.broker import TEST_CLIENT_OPTIONS, Broker
from tests.support import admin_webhook, eventually

pytestmark = pytest.mark.timeout(180)
JOIN_WAIT = 90.0


async def test_a_database_outage_pauses_commits_nothing_and_resumes(
    kafka_broker: Broker, make_settings: Callable[..., Settings]
) -> None:
    topic = kafka_broker.topic()
    group = f"g-{topic}"
    settings = make_settings(
        kafka_bootstrap_servers=kafka_broker.bootstrap,
        kafka_topics=topic,
        kafka_group=group,
        kafka_options=TEST_CLIENT_OPTIONS,
    )
    async with open_runtime(settings) as rt:
        await admin_webhook(rt, datetime.now(UTC))
        real_ingest = rt.events.ingest
        outage = asyncio.Event()
        outage.set()
        tried = 0

        async def ingest(batch: list[Any], *, now: datetime) -> list[Any]:
            nonlocal tried
            tried += 1
            if outage.is_set():
                raise StorageUnavailable("the database is unavailable, try again shortly")
            return await real_ingest(batch, now=now)

        rt.events.ingest = ingest  # type: ignore[method-assign]
        consumer = KafkaIngest(rt)
        running = asyncio.create_task(consumer.run())
        try:
            kafka_broker.produce(
                topic, [{"event": "post.created", "id": f"o-{i}", "data": {}} for i in range(10)]
            )
            await eventually(
                lambda: asyncio.sleep(0, consumer.state),
                lambda state: "storage" in state.paused_for,
                timeout=JOIN_WAIT,
                what="paused for the outage",
            )
            await eventually(
                lambda: asyncio.sleep(0, tried), lambda n: n >= 3, what="retries with backoff"
            )
            assert (await rt.deliveries.counts()) == {}
            assert kafka_broker.committed(group, topic, 1) == [-1001]  # nothing committed

            outage.clear()  # the database is back
            await eventually(rt.deliveries.counts, lambda c: c.get("pending") == 10, what="stored")
            await eventually(
                lambda: asyncio.sleep(0, consumer.state),
                lambda state: not state.paused_for,
                what="resumed",
            )
            await eventually(
                lambda: asyncio.sleep(0, kafka_broker.committed(group, topic, 1)),
                lambda offsets: offsets == [10],
                what="committed once stored",
            )
            assert consumer.state.stored == 10
        finally:
            consumer.stop()
            await running


async def test_dead_letters_are_kept_as_long_as_deliveries_then_purged(
    make_settings: Callable[..., Settings],
) -> None:
    from datetime import timedelta

    from bellhook.store.ingest_errors import IngestError

    now = datetime.now(UTC)
    async with open_runtime(make_settings()) as rt:
        old = IngestError("t", 0, 1, None, "{", "not_json", "the message is not JSON")
        recent = IngestError("t", 0, 2, "k", "[", "not_an_object", "not an object")
        await rt.ingest_errors.record([old], now=now - timedelta(days=31))
        await rt.ingest_errors.record([recent, old], now=now)  # old again: kept once
        assert await rt.ingest_errors.purge(before=now - timedelta(days=30), batch=10) == 1
        assert await rt.ingest_errors.purge(before=now - timedelta(days=30), batch=10) == 0
        page = await rt.ingest_errors.page(limit=10, cursor=None)
    assert [(e.offset, e.code) for e in page.items] == [(2, "not_an_object")]
