"""Ingest: an event and all its deliveries, committed in one transaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bellhook.domain.ids import new_id
from bellhook.domain.models import DeliveryStatus, WebhookStatus
from bellhook.domain.routing import Route, recipients
from bellhook.store.database import Database
from bellhook.store.deliveries import TARGET_COLUMNS, Job
from bellhook.store.secretbox import OpenedSecrets, SecretBox
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


class Handoff(Protocol):
    """A dispatcher in this process that takes fresh deliveries straight from ingest.

    Ingest stores them already leased to it, and hands them over once committed: no
    claim transaction, no wait for the claim loop. A crash in between only means the
    lease runs out and any worker sends them (at-least-once, as with claims).
    """

    @property
    def lease(self) -> timedelta: ...

    def reserve(self, webhook_id: str) -> bool:
        """Take a slot for one delivery to ``webhook_id``; False when there is no room
        (the delivery is then stored due now, and the dispatcher claims it when it has)."""
        ...

    def unreserve(self, webhook_ids: Iterable[str]) -> None:
        """Give back slots whose deliveries were not committed."""
        ...

    def accept(self, jobs: list[Job]) -> None:
        """The committed deliveries of reserved slots."""
        ...


@dataclass(frozen=True, slots=True)
class _Reserved:
    delivery_id: str
    event: NewEvent
    target: Any  # the webhook's row of TARGET_COLUMNS
    leased_until: datetime

    @property
    def webhook_id(self) -> str:
        return str(self.target.id)


MAX_GROUP = 1000  # events committed together at most by ingest_one


class EventRepository:
    def __init__(self, db: Database, *, opened: OpenedSecrets | None = None) -> None:
        self.db = db
        self.opened = opened if opened is not None else OpenedSecrets(SecretBox())
        self.handoff: Handoff | None = None  # set by a dispatcher running in this process
        self._routes: dict[str, tuple[Any, Route]] = {}
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
            reserved: list[_Reserved] = []
            # The dispatcher the slots are reserved on gets them back or their jobs, even
            # if another one registers meanwhile.
            handoff = self.handoff
            try:
                async with self.db.write() as conn:
                    results = await self._ingest(conn, batch, now, handoff, reserved)
            except IntegrityError:
                _unreserve(handoff, reserved)
                # Another transaction stored one of these ids meanwhile (PostgreSQL);
                # the next try sees it as a duplicate.
                if attempt == 2:
                    raise
                continue
            except BaseException:
                _unreserve(handoff, reserved)
                raise
            self._hand_off(handoff, reserved)
            return results
        raise AssertionError("unreachable")

    def _hand_off(self, handoff: Handoff | None, reserved: list[_Reserved]) -> None:
        if not reserved or handoff is None:
            return
        jobs: list[Job] = []
        lost: list[str] = []
        for r in reserved:
            t = r.target
            secrets = self.opened.of(
                t.id, t.secret, t.previous_secret, t.previous_secret_expires_at
            )
            if secrets is None:  # logged; the lease lapses and the claim skips it too
                lost.append(r.webhook_id)
                continue
            jobs.append(
                Job(
                    delivery_id=r.delivery_id,
                    webhook_id=r.webhook_id,
                    url=t.url,
                    secrets=secrets,
                    event_id=r.event.id,
                    event_type=r.event.type,
                    data_json=r.event.data_json,
                    timestamp=r.event.timestamp,
                    attempt_count=0,
                    schedule_step=0,
                    is_test=False,
                    leased_until=r.leased_until,
                )
            )
        if lost:
            handoff.unreserve(lost)
        handoff.accept(jobs)

    async def _ingest(
        self,
        conn: AsyncConnection,
        batch: list[NewEvent],
        now: datetime,
        handoff: Handoff | None,
        reserved: list[_Reserved],
    ) -> list[Accepted]:
        ids = list(dict.fromkeys(e.id for e in batch))
        # One id (most requests): "=" is a cached statement; IN is rendered per call.
        seen = events.c.id == ids[0] if len(ids) == 1 else events.c.id.in_(ids)
        stored = set((await conn.execute(select(events.c.id).where(seen))).scalars())
        fresh: dict[str, NewEvent] = {}
        for event in batch:
            if event.id not in stored:
                fresh.setdefault(event.id, event)
        counts: dict[str, int] = {}
        if fresh:
            routes, targets = await active_webhooks(conn, self._routes)
            await conn.execute(insert(events), [_event_row(e, now) for e in fresh.values()])
            rows: list[dict[str, Any]] = []
            for event in fresh.values():
                chosen = recipients(routes, event.type, event.audience)
                counts[event.id] = len(chosen)
                for webhook_id in chosen:
                    row = _new_delivery(event.id, event.type, webhook_id, now)
                    if handoff is not None and handoff.reserve(webhook_id):
                        row["next_attempt_at"] = leased_until = now + handoff.lease
                        reserved.append(
                            _Reserved(row["id"], event, targets[webhook_id], leased_until)
                        )
                    rows.append(row)
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


def _unreserve(handoff: Handoff | None, reserved: list[_Reserved]) -> None:
    if reserved and handoff is not None:
        handoff.unreserve(r.webhook_id for r in reserved)


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


async def active_webhooks(
    conn: AsyncConnection, parsed: dict[str, tuple[Any, Route]]
) -> tuple[list[Route], dict[str, Any]]:
    """The routes of the active webhooks, and each one's row of ``TARGET_COLUMNS``.

    Every ingest reads them; parsing each webhook's event list again each time cost more
    than the query. ``parsed`` keeps each webhook's route with the stored values it was
    made from, so an edit makes a new one; deleted webhooks' entries are dropped.
    """
    rows = (
        await conn.execute(
            select(
                *TARGET_COLUMNS, webhooks.c.owner_id, webhooks.c.admin_owned, webhooks.c.events
            ).where(webhooks.c.status == WebhookStatus.ACTIVE.value)
        )
    ).all()
    routes = []
    for r in rows:
        made_from = (r.owner_id, bool(r.admin_owned), r.events)
        known = parsed.get(r.id)
        if known is None or known[0] != made_from:
            known = (made_from, Route(r.id, *made_from[:2], tuple(json.loads(r.events))))
            parsed[r.id] = known
        routes.append(known[1])
    if len(parsed) > len(rows):
        for gone in parsed.keys() - {r.id for r in rows}:
            del parsed[gone]
    return routes, {r.id: r for r in rows}
