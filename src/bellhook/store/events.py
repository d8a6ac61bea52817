"""Ingest: an event and all its deliveries, committed in one transaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from sqlalchemy.exc import IntegrityError

from bellhook.domain.ids import new_id, new_ids
from bellhook.domain.routing import Route, recipients
from bellhook.domain.timefmt import iso_utc
from bellhook.store.database import Database
from bellhook.store.deliveries import ACTIVE, PENDING, TARGET_COLUMNS_SQL, Job
from bellhook.store.direct import Direct, marks
from bellhook.store.secretbox import OpenedSecrets, SecretBox


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    type: str
    data_json: str  # exactly the bytes receivers get (JS-compatible)
    timestamp: datetime
    audience: tuple[str, ...] | None
    trace_context: str | None = None  # the ingest span's traceparent (None: not traced)


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
    target: _Webhook
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

        A lone event is committed at once; under load, the events whose requests are
        ready together share a commit (on PostgreSQL, also those that arrive while one
        runs), so a transaction costs once per group instead of once per event. Each
        caller returns only once its event is committed.
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
                async with self.db.direct() as tx:
                    results = await self._ingest(tx, batch, now, handoff, reserved)
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
            self._hand_off(handoff, reserved, now)
            return results
        raise AssertionError("unreachable")

    def _hand_off(self, handoff: Handoff | None, reserved: list[_Reserved], now: datetime) -> None:
        if not reserved or handoff is None:
            return
        jobs: list[Job] = []
        lost: list[str] = []
        stamps: dict[str, str] = {}  # per event, not per delivery of a fan-out
        for r in reserved:
            t = r.target
            secrets = self.opened.of(
                t.id, t.secret, t.previous_secret, t.previous_secret_expires_at
            )
            if secrets is None:  # logged; the lease lapses and the claim skips it too
                lost.append(r.webhook_id)
                continue
            stamp = stamps.get(r.event.id)
            if stamp is None:
                stamp = stamps[r.event.id] = iso_utc(r.event.timestamp)
            jobs.append(
                Job(
                    delivery_id=r.delivery_id,
                    webhook_id=r.webhook_id,
                    url=t.url,
                    secrets=secrets,
                    event_id=r.event.id,
                    event_type=r.event.type,
                    data_json=r.event.data_json,
                    timestamp=stamp,
                    attempt_count=0,
                    schedule_step=0,
                    is_test=False,
                    leased_until=r.leased_until,
                    accepted_at=now,
                    trace_context=r.event.trace_context,
                )
            )
        if lost:
            handoff.unreserve(lost)
        handoff.accept(jobs)

    async def _ingest(
        self,
        tx: Direct,
        batch: list[NewEvent],
        now: datetime,
        handoff: Handoff | None,
        reserved: list[_Reserved],
    ) -> list[Accepted]:
        """On the driver's connection (``store.direct``): every published event runs it."""
        ids = list(dict.fromkeys(e.id for e in batch))
        stored = {r[0] for r in await tx.fetch(_seen_sql(len(ids)), ids)}
        fresh: dict[str, NewEvent] = {}
        for event in batch:
            if event.id not in stored:
                fresh.setdefault(event.id, event)
        counts: dict[str, int] = {}
        if fresh:
            routes, targets = await active_webhooks(tx, self._routes)
            stored_now = tx.when(now)
            await tx.execute_many(
                _INSERT_EVENT_SQL, [_event_values(tx, e, stored_now) for e in fresh.values()]
            )
            rows: list[tuple[Any, ...]] = []
            lease_until = now + handoff.lease if handoff is not None else now
            stored_lease = tx.when(lease_until)
            routed = [
                (event, recipients(routes, event.type, event.audience)) for event in fresh.values()
            ]
            # Made at once for the batch: 0.3 µs an id instead of 5 (one read of the clock
            # and of the system's randomness), and sorted, so that they still follow the
            # events' order, as ids made one event after another would.
            count = sum(len(webhook_ids) for _, webhook_ids in routed)
            delivery_ids = iter(sorted(new_ids("dlv", count)))
            due_now = False  # some deliveries no dispatcher of this process took
            for event, webhook_ids in routed:
                counts[event.id] = len(webhook_ids)
                # webhook_ids first: zip stops at its end without taking the next id.
                for webhook_id, delivery_id in zip(webhook_ids, delivery_ids, strict=False):
                    due = stored_now
                    if handoff is not None and handoff.reserve(webhook_id):
                        due = stored_lease
                        reserved.append(
                            _Reserved(delivery_id, event, targets[webhook_id], lease_until)
                        )
                    else:
                        due_now = True
                    rows.append(
                        _delivery_values(delivery_id, event, webhook_id, due, False, stored_now)
                    )
            await tx.execute_many(_INSERT_DELIVERY_SQL, rows)
            if due_now:
                tx.wake_workers()
        if stored:
            old = sorted(stored)
            counted = await tx.fetch(_counts_sql(len(old)), [*old, False])
            counts.update({event_id: int(n) for event_id, n in counted})
        results = []
        first = set(fresh)
        for event in batch:
            is_new = event.id in first
            first.discard(event.id)
            results.append(Accepted(event.id, counts.get(event.id, 0), duplicate=not is_new))
        return results

    async def schedule_test(self, event: NewEvent, webhook_id: str, *, now: datetime) -> str:
        """Store a test event with one delivery to one webhook, already claimed by the caller."""
        delivery_id = new_id("dlv")
        async with self.db.direct() as tx:
            stored_now = tx.when(now)
            await tx.execute_many(_INSERT_EVENT_SQL, [_event_values(tx, event, stored_now)])
            # No due time: sent right away by the API, never by the queue.
            await tx.execute_many(
                _INSERT_DELIVERY_SQL,
                [_delivery_values(delivery_id, event, webhook_id, None, True, stored_now)],
            )
        return delivery_id


def _unreserve(handoff: Handoff | None, reserved: list[_Reserved]) -> None:
    if reserved and handoff is not None:
        handoff.unreserve(r.webhook_id for r in reserved)


def _event_values(tx: Direct, event: NewEvent, stored_now: Any) -> tuple[Any, ...]:
    """``event`` as a row of ``_INSERT_EVENT_SQL``."""
    audience = None if event.audience is None else json.dumps(list(event.audience))
    return (
        event.id,
        event.type,
        event.data_json,
        tx.when(event.timestamp),
        audience,
        stored_now,
        event.trace_context,
    )


def _delivery_values(
    delivery_id: str, event: NewEvent, webhook_id: str, due: Any, is_test: bool, stored_now: Any
) -> tuple[Any, ...]:
    """A new delivery of ``event`` as a row of ``_INSERT_DELIVERY_SQL``."""
    return (
        delivery_id,
        event.id,
        webhook_id,
        event.type,
        PENDING,
        due,
        is_test,
        stored_now,
        stored_now,
    )


class _Webhook(NamedTuple):
    """What ingest reads of an active webhook: where and how to send, and its route."""

    id: str
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    owner_id: str
    admin_owned: bool
    events: str  # JSON list of names


async def active_webhooks(
    tx: Direct, parsed: dict[str, tuple[Any, Route]]
) -> tuple[list[Route], dict[str, _Webhook]]:
    """The routes of the active webhooks, and each one's target.

    Every ingest reads them; parsing each webhook's event list again each time cost more
    than the query. ``parsed`` keeps each webhook's route with the stored values it was
    made from, so an edit makes a new one; deleted webhooks' entries are dropped.
    """
    rows = [
        _Webhook(r[0], r[1], r[2], r[3], tx.datetime_of(r[4]), r[5], bool(r[6]), r[7])
        for r in await tx.fetch(_ACTIVE_WEBHOOKS_SQL, (ACTIVE,))
    ]
    routes = []
    for r in rows:
        made_from = (r.owner_id, r.admin_owned, r.events)
        known = parsed.get(r.id)
        if known is None or known[0] != made_from:
            known = (made_from, Route(r.id, *made_from[:2], tuple(json.loads(r.events))))
            parsed[r.id] = known
        routes.append(known[1])
    if len(parsed) > len(rows):
        for gone in parsed.keys() - {r.id for r in rows}:
            del parsed[gone]
    return routes, {r.id: r for r in rows}


# Ingest's statements, on the driver's connection (store.direct).
_ACTIVE_WEBHOOKS_SQL = (
    f"SELECT {TARGET_COLUMNS_SQL}, owner_id, admin_owned, events"  # noqa: S608 (fixed text)
    " FROM webhooks WHERE status = ?"
)
_INSERT_EVENT_SQL = (
    "INSERT INTO events (id, type, data, timestamp, audience, created_at, trace_context)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_DELIVERY_SQL = (
    "INSERT INTO deliveries (id, event_id, webhook_id, event_type, status, next_attempt_at,"
    " is_test, created_at, updated_at, attempt_count, schedule_step)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)"
)


def _seen_sql(n: int) -> str:
    return f"SELECT id FROM events WHERE id IN ({marks(n)})"  # noqa: S608 (placeholders only)


def _counts_sql(n: int) -> str:
    return (
        "SELECT event_id, count(*) FROM deliveries"  # noqa: S608 (placeholders only)
        f" WHERE event_id IN ({marks(n)}) AND is_test = ? GROUP BY event_id"
    )
