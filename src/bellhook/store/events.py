"""Ingest: an event and all its deliveries, committed in one transaction."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bellhook.domain.ids import new_id
from bellhook.domain.models import DeliveryStatus, WebhookStatus
from bellhook.domain.routing import Route, recipients
from bellhook.store.database import Database
from bellhook.store.tables import deliveries, events, webhooks


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    type: str
    data_json: str  # exactly the bytes receivers get (JS-compatible)
    timestamp: datetime
    audience: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Accepted:
    event_id: str
    deliveries: int
    duplicate: bool


MAX_GROUP = 1000  # events committed together at most by ingest_one


class EventRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiting: list[tuple[NewEvent, datetime, asyncio.Future[Accepted]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def ingest_one(self, event: NewEvent, *, now: datetime) -> Accepted:
        """Ingest one event, in one transaction with the events other requests publish at
        the same moment (group commit).

        A lone event is committed at once; under load, the events that arrive while a
        commit runs share the next one, so a transaction costs once per group instead of
        once per event. Each caller returns only once its event is committed.
        """
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, now, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting())
        # shield: a caller that goes away must not cancel the others' commit.
        return await asyncio.shield(future)

    async def _commit_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            try:
                results = await self.ingest(
                    [e for e, _, _ in group], now=max(n for _, n, _ in group)
                )
            except BaseException as exc:  # every caller of the group learns the failure
                cancelled = isinstance(exc, asyncio.CancelledError)
                for _, _, future in group + (self._waiting if cancelled else []):
                    if not future.done():
                        future.set_exception(exc)
                if cancelled:
                    self._waiting = []
                    raise
                continue
            for (_, _, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def ingest(self, batch: list[NewEvent], *, now: datetime) -> list[Accepted]:
        """Store events not seen before and schedule their deliveries, all or nothing.

        Results come in the order of ``batch``; an id seen before (earlier, or earlier in
        the same batch) is a duplicate: nothing new is stored or scheduled for it.
        """
        for attempt in range(3):
            try:
                async with self.db.write() as conn:
                    return await self._ingest(conn, batch, now)
            except IntegrityError:
                # Another transaction stored one of these ids meanwhile (PostgreSQL);
                # the next try sees it as a duplicate.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _ingest(
        self, conn: AsyncConnection, batch: list[NewEvent], now: datetime
    ) -> list[Accepted]:
        ids = list(dict.fromkeys(e.id for e in batch))
        stored = set(
            (await conn.execute(select(events.c.id).where(events.c.id.in_(ids)))).scalars()
        )
        fresh: dict[str, NewEvent] = {}
        for event in batch:
            if event.id not in stored:
                fresh.setdefault(event.id, event)
        counts: dict[str, int] = {}
        if fresh:
            routes = await active_routes(conn)
            await conn.execute(insert(events), [_event_row(e, now) for e in fresh.values()])
            rows: list[dict[str, Any]] = []
            for event in fresh.values():
                targets = recipients(routes, event.type, event.audience)
                counts[event.id] = len(targets)
                rows.extend(_new_delivery(event.id, event.type, w, now) for w in targets)
            if rows:
                await conn.execute(insert(deliveries), rows)
        if stored:
            counted = await conn.execute(
                select(deliveries.c.event_id, func.count())
                .where(deliveries.c.event_id.in_(stored), deliveries.c.is_test.is_(False))
                .group_by(deliveries.c.event_id)
            )
            counts.update({event_id: int(n) for event_id, n in counted.all()})
        results = []
        first = set(fresh)
        for event in batch:
            is_new = event.id in first
            first.discard(event.id)
            results.append(Accepted(event.id, counts.get(event.id, 0), duplicate=not is_new))
        return results

    async def schedule_test(self, event: NewEvent, webhook_id: str, *, now: datetime) -> str:
        """Store a test event with one delivery to one webhook, already claimed by the caller."""
        delivery = _new_delivery(event.id, event.type, webhook_id, now, is_test=True)
        delivery["next_attempt_at"] = None  # sent right away by the API, never by the queue
        async with self.db.write() as conn:
            await conn.execute(insert(events).values(_event_row(event, now)))
            await conn.execute(insert(deliveries).values(**delivery))
        return str(delivery["id"])


def _event_row(event: NewEvent, now: datetime) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "data": event.data_json,
        "timestamp": event.timestamp,
        "audience": None if event.audience is None else json.dumps(list(event.audience)),
        "created_at": now,
    }


def _new_delivery(
    event_id: str, event_type: str, webhook_id: str, now: datetime, *, is_test: bool = False
) -> dict[str, Any]:
    return {
        "id": new_id("dlv"),
        "event_id": event_id,
        "webhook_id": webhook_id,
        "event_type": event_type,
        "status": DeliveryStatus.PENDING.value,
        "attempt_count": 0,
        "schedule_step": 0,
        "next_attempt_at": now,
        "is_test": is_test,
        "created_at": now,
        "updated_at": now,
    }


async def active_routes(conn: AsyncConnection) -> list[Route]:
    rows = await conn.execute(
        select(webhooks.c.id, webhooks.c.owner_id, webhooks.c.admin_owned, webhooks.c.events).where(
            webhooks.c.status == WebhookStatus.ACTIVE.value
        )
    )
    return [Route(r.id, r.owner_id, bool(r.admin_owned), tuple(json.loads(r.events))) for r in rows]
