"""Retention: old finished deliveries, their attempts and events are purged in batches;
pending deliveries and recent ones stay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from bellhook.config import Settings
from bellhook.delivery.dispatcher import purge_expired, running_dispatcher
from bellhook.domain.models import DeliveryStatus
from bellhook.domain.outcome import AttemptResult, Decision
from bellhook.runtime import open_runtime
from bellhook.store.deliveries import Completed
from bellhook.store.events import NewEvent
from bellhook.store.tables import attempts, deliveries, events
from tests.support import ADMIN, Start, admin_webhook


async def _count(rt: Any, table: Any) -> int:
    async with rt.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_purge_removes_only_old_finished_deliveries(
    make_settings: Callable[..., Settings],
) -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    recent = datetime.now(UTC)
    async with open_runtime(make_settings()) as rt:
        hook = await admin_webhook(rt, old)

        async def event_at(event_id: str, when: datetime) -> None:
            await rt.events.ingest([NewEvent(event_id, "post.created", "{}", when, None)], now=when)

        for i in range(7):
            await event_at(f"old-{i}", old)
        await event_at("old-pending", old)
        await event_at("recent", recent)
        jobs = await rt.deliveries.claim(
            now=recent, limit=100, lease=timedelta(seconds=30), in_flight={}, per_webhook=100
        )
        assert len(jobs) == 9
        finished = [j for j in jobs if j.event_id != "old-pending"]
        result = AttemptResult(started_at=old, latency_ms=1.0, status_code=200)
        await rt.deliveries.record(
            [Completed(j, result, Decision(DeliveryStatus.SUCCEEDED, None, 0)) for j in finished],
            now=old,
            auto_disable_after=timedelta(days=5),
        )
        # The recent event's delivery finished recently: it must stay.
        async with rt.db.write() as conn:
            await conn.execute(
                deliveries.update()
                .where(deliveries.c.event_id == "recent")
                .values(updated_at=recent)
            )

        before = recent - timedelta(days=30)
        batches = []
        while removed := await rt.deliveries.purge(before=before, batch=3):
            batches.append(removed)
        assert len(batches) >= 3  # small batches, not one sweep
        async with rt.db.read() as conn:
            left = set((await conn.execute(select(deliveries.c.event_id))).scalars())
            left_events = set((await conn.execute(select(events.c.id))).scalars())
        assert left == {"old-pending", "recent"}
        assert left_events == {"old-pending", "recent"}
        assert await _count(rt, attempts) == 1  # the recent delivery's attempt
        assert hook.id


async def test_purge_sweeps_attempts_recorded_after_their_webhook_was_deleted(
    make_settings: Callable[..., Settings],
) -> None:
    """A webhook deleted while one of its deliveries is in flight: the outcome arrives
    after the delivery is gone, and its attempt row is left behind. Once older than
    the retention, the purge removes it too."""
    old = datetime(2020, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    async with open_runtime(make_settings()) as rt:
        hook = await admin_webhook(rt, old)
        await rt.events.ingest([NewEvent("gone", "post.created", "{}", old, None)], now=old)
        (job,) = await rt.deliveries.claim(
            now=now, limit=10, lease=timedelta(seconds=30), in_flight={}, per_webhook=10
        )
        await rt.webhooks.delete(ADMIN, hook.id)  # mid-delivery
        result = AttemptResult(started_at=old, latency_ms=1.0, status_code=200)
        await rt.deliveries.record(
            [Completed(job, result, Decision(DeliveryStatus.SUCCEEDED, None, 0))],
            now=old,
            auto_disable_after=timedelta(days=5),
        )
        assert await _count(rt, attempts) == 1  # the stray attempt
        assert await _count(rt, deliveries) == 0

        while await rt.deliveries.purge(before=now - timedelta(days=30), batch=10):
            pass
        assert await _count(rt, attempts) == 0


async def test_a_large_purge_never_stalls_delivery(
    make_settings: Callable[..., Settings], receivers: Start
) -> None:
    """30,000 expired deliveries (and their events and attempts) purged while events
    are published one after another: events keep arriving while the purge is under way
    (its 60 batches pause 3 s in all), which a purge holding locks that claims or
    outcomes wait on would not allow."""
    old = datetime(2020, 1, 1, tzinfo=UTC)
    rx = await receivers()
    settings = make_settings(dev_mode=True, worker=True, poll_interval=0.05)
    async with open_runtime(settings) as rt:
        hook = await admin_webhook(rt, old, rx.url())
        expired = 30_000
        async with rt.db.write() as conn:
            await conn.execute(
                events.insert(),
                [
                    {"id": f"old-{n}", "type": "post.created", "data": "{}", "timestamp": old,
                     "audience": None, "created_at": old}
                    for n in range(expired // 10)
                ],
            )  # fmt: skip
            await conn.execute(
                deliveries.insert(),
                [
                    {"id": f"dlv-old-{n}", "event_id": f"old-{n // 10}", "webhook_id": hook.id,
                     "event_type": "post.created", "status": "succeeded", "attempt_count": 1,
                     "schedule_step": 0, "is_test": False, "created_at": old, "updated_at": old}
                    for n in range(expired)
                ],
            )  # fmt: skip
            await conn.execute(
                attempts.insert(),
                [
                    {"id": f"att-old-{n}", "delivery_id": f"dlv-old-{n}", "webhook_id": hook.id,
                     "number": 1, "manual": False, "started_at": old, "status_code": 200,
                     "latency_ms": 1.0}
                    for n in range(expired)
                ],
            )  # fmt: skip
        async with running_dispatcher(rt):
            purging = asyncio.create_task(
                purge_expired(rt, before=datetime.now(UTC) - timedelta(days=30))
            )
            during = 0  # events published and delivered while the purge ran
            while not purging.done():
                now = datetime.now(UTC)
                event = NewEvent(f"new-{during}", "post.created", "{}", now, None)
                await rt.events.ingest([event], now=now)
                await rx.wait_for_count(during + 1)
                during += 1
            removed = await purging
        assert during >= 10, during
        assert removed == expired + expired // 10  # deliveries (with their attempts), events
        assert await _count(rt, deliveries) == during  # the new ones only
        assert await _count(rt, attempts) == during
