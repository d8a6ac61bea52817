"""Deliveries: the queue the dispatcher claims from, and the log owners read.

Claiming pushes ``next_attempt_at`` past the delivery timeout (a lease) instead of
locking rows: a worker that dies mid-delivery leaves nothing to clean up, the
delivery just becomes due again (at-least-once). On PostgreSQL many workers claim
concurrently with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    Select,
    delete,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from bellhook.domain.ids import is_wellformed, new_ids
from bellhook.domain.models import (
    Attempt,
    Delivery,
    DeliveryStatus,
    WebhookSecrets,
    WebhookStatus,
)
from bellhook.domain.outcome import (
    AttemptResult,
    Decision,
    auto_disable_reason,
    disable_reason,
)
from bellhook.domain.paging import Cursor, Page
from bellhook.domain.routing import Candidate, in_turns, pick_claims
from bellhook.domain.timefmt import iso_utc
from bellhook.errors import NotFound
from bellhook.store.database import Database
from bellhook.store.direct import Direct, Row, RowsStatement, marks
from bellhook.store.paging import newest_first, page_of
from bellhook.store.rows import to_attempt, to_delivery
from bellhook.store.secretbox import OpenedSecrets, SecretBox
from bellhook.store.tables import PENDING_ONLY, attempts, deliveries, events, webhooks

CLAIM_BRANCHES = 100  # webhooks looked at per claim statement
PENDING = DeliveryStatus.PENDING.value
SUCCEEDED = DeliveryStatus.SUCCEEDED.value
ACTIVE = WebhookStatus.ACTIVE.value
DISABLED = WebhookStatus.DISABLED.value
log = structlog.get_logger("bellhook.store")

_DUE_COLUMNS = (
    deliveries.c.id,
    deliveries.c.webhook_id,
    deliveries.c.next_attempt_at,
    deliveries.c.event_id,
    deliveries.c.event_type,
    deliveries.c.attempt_count,
    deliveries.c.schedule_step,
    deliveries.c.is_test,
    events.c.data,
    events.c.timestamp,
    deliveries.c.created_at,
    events.c.trace_context,
)


# What a delivery needs of its webhook: where, and how to sign (claims and ingest).
TARGET_COLUMNS_SQL = "id, url, secret, previous_secret, previous_secret_expires_at"

# The queue's hot statements, run on the driver's connection (store.direct).
_TARGETS_SQL = f"SELECT {TARGET_COLUMNS_SQL} FROM webhooks WHERE status = ?"  # noqa: S608
# In the order of _DUE_COLUMNS.
# The status is written out, not a parameter: only then may either database use the
# partial index ix_deliveries_pending (a prepared statement's plan must hold for any
# value of a parameter).
_DUE_BRANCH_SQL = (
    "SELECT d.id, d.webhook_id, d.next_attempt_at, d.event_id, d.event_type,"  # noqa: S608
    " d.attempt_count, d.schedule_step, d.is_test, e.data, e.timestamp, d.created_at,"
    " e.trace_context FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
    f" WHERE d.webhook_id = ? AND d.status = '{PENDING}' AND d.next_attempt_at <= ?"
    " ORDER BY d.next_attempt_at LIMIT ?"
)
# The claim's lease, and an outcome's attempt and next state: rows of every delivery.
_LEASE = RowsStatement(
    each="UPDATE deliveries SET next_attempt_at = ? WHERE id = ?",
    columns=(
        "UPDATE deliveries AS d SET next_attempt_at = v.until"
        " FROM unnest(?::timestamptz[], ?::text[]) AS v(until, id) WHERE d.id = v.id"
    ),
)
_ATTEMPT_COLUMNS = (
    "id, delivery_id, webhook_id, number, manual, started_at,"
    " status_code, latency_ms, error_kind, error_message, response_excerpt"
)
_ATTEMPT = RowsStatement(
    each=f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) VALUES ({marks(11)})",  # noqa: S608 (fixed)
    columns=(
        f"INSERT INTO attempts ({_ATTEMPT_COLUMNS})"  # noqa: S608 (fixed text)
        " SELECT * FROM unnest(?::text[], ?::text[],"
        " ?::text[], ?::int[], ?::bool[], ?::timestamptz[], ?::int[], ?::float8[], ?::text[],"
        " ?::text[], ?::text[])"
    ),
)
# No delivery is twice in one batch (see RowsStatement): the dispatcher sends a delivery
# again only after its outcome is recorded.
_SCHEDULED = RowsStatement(
    each=(
        "UPDATE deliveries SET status = ?, next_attempt_at = ?, schedule_step = ?,"
        " attempt_count = attempt_count + 1, last_status_code = ?, last_error_kind = ?,"
        " updated_at = ? WHERE id = ? AND status = ?"
    ),
    columns=(
        "UPDATE deliveries AS d SET status = v.status, next_attempt_at = v.next_at,"
        " schedule_step = v.step, attempt_count = d.attempt_count + 1,"
        " last_status_code = v.code, last_error_kind = v.kind, updated_at = v.at"
        " FROM unnest(?::text[], ?::timestamptz[], ?::int[], ?::int[], ?::text[],"
        " ?::timestamptz[], ?::text[], ?::text[])"
        " AS v(status, next_at, step, code, kind, at, id, expected)"
        " WHERE d.id = v.id AND d.status = v.expected"
    ),
)
_RELEASE_SQL = (
    "UPDATE deliveries SET next_attempt_at = ? WHERE id = ? AND next_attempt_at = ? AND status = ?"
)
_MANUAL_DONE_SQL = (
    "UPDATE deliveries SET status = ?, next_attempt_at = NULL,"
    " attempt_count = attempt_count + 1, last_status_code = ?, last_error_kind = ?,"
    " updated_at = ? WHERE id = ?"
)
_MANUAL_OTHER_SQL = (
    "UPDATE deliveries SET attempt_count = attempt_count + 1, last_status_code = ?,"
    " last_error_kind = ?, updated_at = ? WHERE id = ?"
)
_RECOVERED_SQL = (
    "UPDATE webhooks SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL"
)
_FAILING_SQL = "UPDATE webhooks SET failing_since = ? WHERE id = ? AND failing_since IS NULL"
_DISABLE_SQL = (
    "UPDATE webhooks SET status = ?, disabled_reason = ?, updated_at = ?"
    " WHERE id = ? AND status = ? RETURNING id"
)


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    secrets: WebhookSecrets
    room: int  # deliveries it may still take


# Not frozen: one is made per delivery, and a frozen dataclass's __init__ (a
# object.__setattr__ per field) cost 3-4% of the worker's CPU. Nothing mutates them.
@dataclass(slots=True)
class Job:
    """A delivery taken for sending, with everything the sender needs."""

    delivery_id: str
    webhook_id: str
    url: str
    secrets: WebhookSecrets
    event_id: str
    event_type: str
    data_json: str
    timestamp: str  # the event's, as the payload writes it (domain.timefmt.iso_utc)
    attempt_count: int
    schedule_step: int
    is_test: bool
    leased_until: datetime | None = None  # when a claim's lease runs out (None: manual)
    accepted_at: datetime | None = None  # when its event was accepted (end-to-end latency)
    trace_context: str | None = None  # its ingest span's traceparent (None: not traced)


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int  # waiting for a send or a retry
    due: int  # of which their time has come
    oldest_due_seconds: float  # how long the oldest due one has waited (0: none due)


@dataclass(slots=True)  # not frozen: made per delivery (see Job)
class Completed:
    """An attempt to write to the log, with the delivery's next state (None: manual)."""

    job: Job
    result: AttemptResult
    decision: Decision | None


class DeliveryRepository:
    def __init__(
        self,
        db: Database,
        *,
        secretbox: SecretBox | None = None,
        opened: OpenedSecrets | None = None,
    ) -> None:
        self.db = db
        self.box = secretbox if secretbox is not None else SecretBox()
        self.opened = opened if opened is not None else OpenedSecrets(self.box)
        self._due_sql_of: dict[tuple[str, int], str] = {}

    # --- the queue ---------------------------------------------------------------------

    async def claim(
        self,
        *,
        now: datetime,
        limit: int,
        lease: timedelta,
        in_flight: Mapping[str, int],
        per_webhook: int,
    ) -> list[Job]:
        """Take up to ``limit`` due deliveries, oldest first, within each webhook's room.

        The open webhooks (with their URL and secrets, opened once per webhook rather
        than once per delivery), their due deliveries with the event data (a statement
        per 100 webhooks), and the lease: on the driver's connection, since this runs
        for every few dozen deliveries sent (see ``store.direct``).
        """
        # Not durable: a lease lost in a database crash only makes its deliveries due
        # again (see Database.direct).
        async with self.db.direct(durable=False) as tx:
            targets = await self._open_targets(tx, in_flight, per_webhook)
            rows: list[Row] = []
            hooks = list(targets)
            stored_now = tx.when(now)
            for start in range(0, len(hooks), CLAIM_BRANCHES):
                branch_hooks = hooks[start : start + CLAIM_BRANCHES]
                params: list[Any] = []
                for webhook_id in branch_hooks:
                    room = min(targets[webhook_id].room, limit)
                    params += (webhook_id, stored_now, room)
                rows += await tx.fetch(self._due_sql(len(branch_hooks)), params)
            if len(hooks) > 1:  # r[1]: webhook_id, r[2]: next_attempt_at
                rows = in_turns(rows, webhook_of=lambda r: r[1], due_of=lambda r: r[2])
            chosen = pick_claims(
                (Candidate(r[0], r[1]) for r in rows),
                in_flight=in_flight,
                per_webhook=per_webhook,
                limit=limit,
            )
            if not chosen:
                return []
            leased_until = now + lease
            stored_lease = tx.when(leased_until)
            await tx.execute_rows(_LEASE, [(stored_lease, d) for d in chosen])
            picked = set(chosen)
            jobs = []
            for r in rows:
                if r[0] in picked:
                    target = targets[r[1]]
                    timestamp = tx.iso_of(r[9])  # events.timestamp is NOT NULL
                    accepted_at = tx.datetime_of(r[10])
                    jobs.append(
                        _job(r, target.url, target.secrets, timestamp, leased_until, accepted_at)
                    )
            return jobs

    async def _open_targets(
        self, tx: Direct, in_flight: Mapping[str, int], per_webhook: int
    ) -> dict[str, _Target]:
        """Active webhooks with room for more deliveries, and where and how to send them.

        A webhook whose secret cannot be decrypted is left out (and logged), so that it
        cannot stall the whole queue; its deliveries wait until the key is configured.
        """
        targets: dict[str, _Target] = {}
        for webhook_id, url, secret, previous, expires in await tx.fetch(_TARGETS_SQL, (ACTIVE,)):
            room = per_webhook - in_flight.get(webhook_id, 0)
            if room <= 0:
                continue
            secrets = self.opened.of(webhook_id, secret, previous, tx.datetime_of(expires))
            if secrets is not None:
                targets[webhook_id] = _Target(url, secrets, room)
        return targets

    def _due_sql(self, branches: int) -> str:
        """The oldest due deliveries of each of ``branches`` webhooks, no more than each
        has room for (parameters: webhook id, now, room; per webhook).

        One index seek per webhook on the pending deliveries' ``(webhook_id,
        next_attempt_at)`` (``ix_deliveries_pending``): a dead
        receiver's backlog is never walked through to find a healthy webhook's work, so
        it cannot slow the others' claims down.
        """
        key = (self.db.dialect, branches)
        sql = self._due_sql_of.get(key)
        if sql is None:
            branch = _DUE_BRANCH_SQL
            if self.db.dialect == "postgresql":
                branch += " FOR UPDATE OF d SKIP LOCKED"
            if branches == 1:
                sql = branch
            else:
                sql = " UNION ALL ".join(
                    f"SELECT * FROM ({branch}) AS b{i}"  # noqa: S608 (fixed text; no values)
                    for i in range(branches)
                )
            self._due_sql_of[key] = sql
        return sql

    async def release(self, jobs: Sequence[Job], *, now: datetime) -> None:
        """Give claimed deliveries that were never sent back to the queue, due now.

        Only those still under the lease they were claimed with: once it has run out,
        another worker may have claimed one (and be sending it, or have scheduled its
        retry), and making it due again would have it sent twice.
        """
        when = self.db.values.when
        stored_now = when(now)
        pending = DeliveryStatus.PENDING.value
        rows = [
            (stored_now, j.delivery_id, when(j.leased_until), pending)
            for j in jobs
            if j.leased_until is not None
        ]
        if not rows:
            return
        # On the driver's connection, like the claim. Webhooks that stop answering give
        # back a claim's worth each, at once: through SQLAlchemy each give-back held the
        # write turn 1-7 ms, and ingest waited behind them (40 ms for five webhooks).
        async with self.db.direct() as tx:
            await tx.execute_many(_RELEASE_SQL, rows)
            tx.wake_workers()  # another process may have room for them

    async def job(self, webhook_id: str, delivery_id: str) -> Job:
        if not is_wellformed(delivery_id):
            raise NotFound(f"no delivery with id {delivery_id!r} for this webhook")
        async with self.db.read() as conn:
            jobs = await _jobs(conn, [delivery_id], self.box)
        if not jobs or jobs[0].webhook_id != webhook_id:
            raise NotFound(f"no delivery with id {delivery_id!r} for this webhook")
        return jobs[0]

    async def record(
        self, completed: Sequence[Completed], *, now: datetime, auto_disable_after: timedelta
    ) -> list[str]:
        """Write attempts and next states in one transaction; returns webhooks disabled.

        On the driver's connection, like the claim: it runs for every flush of outcomes.
        """
        if not completed:
            return []
        # The rows are made before the transaction: the write lock is held for the
        # statements only.
        when = self.db.values.when
        stored_now = when(now)
        attempt_rows: list[tuple[Any, ...]] = []
        scheduled: list[tuple[Any, ...]] = []
        manual_done: list[tuple[Any, ...]] = []
        manual_other: list[tuple[Any, ...]] = []
        healthy: set[str] = set()
        failing: set[str] = set()
        gone: dict[str, str] = {}
        for c, attempt_id in zip(completed, new_ids("att", len(completed)), strict=True):
            r, job, decision = c.result, c.job, c.decision
            error_kind = r.error_kind.value if r.error_kind else None
            attempt_rows.append(
                (
                    attempt_id,
                    job.delivery_id,
                    job.webhook_id,
                    job.attempt_count + 1,
                    decision is None,
                    when(r.started_at),
                    r.status_code,
                    r.latency_ms,
                    error_kind,
                    r.error_message,
                    r.response_excerpt,
                )
            )
            if decision is not None:
                scheduled.append(
                    (
                        decision.status.value,
                        when(decision.next_attempt_at),
                        decision.schedule_step,
                        r.status_code,
                        error_kind,
                        stored_now,
                        job.delivery_id,
                        PENDING,
                    )
                )
            elif r.succeeded:
                manual_done.append(
                    (SUCCEEDED, r.status_code, error_kind, stored_now, job.delivery_id)
                )
            else:
                manual_other.append((r.status_code, error_kind, stored_now, job.delivery_id))
            if reason := disable_reason(r):
                gone[job.webhook_id] = reason
            if not job.is_test:
                (healthy if r.succeeded else failing).add(job.webhook_id)
        async with self.db.direct() as tx:
            await tx.execute_rows(_ATTEMPT, attempt_rows)
            # A manual retry may have finished the delivery meanwhile: never undo it.
            await tx.execute_rows(_SCHEDULED, scheduled)
            # A manual attempt never consumes the schedule: it can only finish the delivery.
            await tx.execute_many(_MANUAL_DONE_SQL, manual_done)
            await tx.execute_many(_MANUAL_OTHER_SQL, manual_other)
            return await _update_health(
                tx,
                healthy - failing,
                failing,
                gone,
                now=now,
                auto_disable_after=auto_disable_after,
            )

    async def recover(self, webhook_id: str, *, since: datetime, now: datetime) -> int:
        """Reschedule every failed delivery of a webhook created since ``since``."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.webhook_id == webhook_id,
                    deliveries.c.status == DeliveryStatus.FAILED.value,
                    deliveries.c.is_test.is_(False),
                    deliveries.c.created_at >= since,
                )
                .values(
                    status=DeliveryStatus.PENDING.value,
                    next_attempt_at=now,
                    schedule_step=0,
                    updated_at=now,
                )
            )
            resent = int(result.rowcount)
        if resent:
            self.db.work_due()
        return resent

    async def purge(self, *, before: datetime, batch: int) -> int:
        """Delete one small batch of finished deliveries (and their attempts) older than
        ``before``, events left without deliveries, and attempts left without their
        delivery; call again until it returns 0."""
        gone = ~select(deliveries.c.id).where(deliveries.c.id == attempts.c.delivery_id).exists()
        async with self.db.write() as conn:
            ids = await _ids(
                conn,
                select(deliveries.c.id).where(
                    deliveries.c.updated_at < before,
                    deliveries.c.status != DeliveryStatus.PENDING.value,
                ),
                batch,
            )
            if ids:
                await conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(ids)))
                await conn.execute(delete(deliveries).where(deliveries.c.id.in_(ids)))
            orphans = await _ids(
                conn,
                select(events.c.id).where(
                    events.c.created_at < before,
                    ~select(deliveries.c.id).where(deliveries.c.event_id == events.c.id).exists(),
                ),
                batch,
            )
            if orphans:
                await conn.execute(delete(events).where(events.c.id.in_(orphans)))
            # Attempts whose delivery is gone: an outcome recorded after its webhook was
            # deleted mid-delivery. Old ones only, so the scan stays on the index.
            strays = await _ids(
                conn, select(attempts.c.id).where(attempts.c.started_at < before, gone), batch
            )
            if strays:
                await conn.execute(delete(attempts).where(attempts.c.id.in_(strays)))
            return len(ids) + len(orphans) + len(strays)

    # --- the log -----------------------------------------------------------------------

    async def page(
        self,
        webhook_id: str,
        *,
        status: DeliveryStatus | None,
        event_type: str | None,
        limit: int,
        cursor: Cursor | None,
    ) -> Page[Delivery]:
        query = select(deliveries).where(deliveries.c.webhook_id == webhook_id)
        if status is not None:
            query = query.where(deliveries.c.status == status.value)
        if event_type is not None:
            query = query.where(deliveries.c.event_type == event_type)
        query = newest_first(query, deliveries, limit=limit, cursor=cursor)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return page_of(rows, limit, to_delivery)

    async def get(self, webhook_id: str, delivery_id: str) -> tuple[Delivery, list[Attempt]]:
        if not is_wellformed(delivery_id):
            raise NotFound(f"no delivery with id {delivery_id!r} for this webhook")
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(deliveries).where(
                        deliveries.c.id == delivery_id, deliveries.c.webhook_id == webhook_id
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"no delivery with id {delivery_id!r} for this webhook")
            attempt_rows = (
                await conn.execute(
                    select(attempts)
                    .where(attempts.c.delivery_id == delivery_id)
                    .order_by(attempts.c.started_at, attempts.c.number)
                )
            ).all()
        return to_delivery(row), [to_attempt(a) for a in attempt_rows]

    async def pending(self, *, at_most: int | None = None) -> int:
        """How many deliveries wait for a send or a retry (the backlog); counted on the
        pending deliveries' partial index, which holds nothing else. ``at_most``: stop
        counting there (a count reads every entry it counts)."""
        async with self.db.read() as conn:
            rows = select(deliveries.c.id).where(PENDING_ONLY)
            if at_most is not None:
                rows = rows.limit(at_most)
            query = select(func.count()).select_from(rows.subquery())
            return int((await conn.execute(query)).scalar_one())

    async def backlog(self, *, now: datetime) -> Backlog:
        """The pending deliveries; how many of active webhooks are due, and since when the
        oldest of those waits. A disabled webhook's pending deliveries count as pending
        but not as due: no worker sends them until it is enabled again, and they would
        otherwise read as a stalled queue."""
        active = webhooks.c.status == ACTIVE
        query = (
            select(
                func.count(),
                func.count().filter(active, deliveries.c.next_attempt_at <= now),
                func.min(deliveries.c.next_attempt_at).filter(active),
            )
            .select_from(deliveries.join(webhooks, webhooks.c.id == deliveries.c.webhook_id))
            # Written out, as the pending deliveries' partial index is (PENDING_ONLY).
            .where(deliveries.c.status == literal_column(f"'{PENDING}'"))
        )
        async with self.db.read() as conn:
            pending, due_now, earliest = (await conn.execute(query)).one()
        waited = 0.0
        if earliest is not None and due_now:
            waited = max((now - earliest).total_seconds(), 0.0)
        return Backlog(pending=int(pending), due=int(due_now), oldest_due_seconds=waited)

    async def counts(self) -> dict[str, int]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
            )
            return {status: int(n) for status, n in rows.all()}


async def _ids(conn: AsyncConnection, query: Select[Any], batch: int) -> list[str]:
    """The first ``batch`` ids ``query`` selects, locked; on PostgreSQL, rows another
    transaction holds are skipped (``SKIP LOCKED``), so that the purges of several
    workers take batches of their own rather than wait for each other's. SQLite has one
    writer at a time, and no row locks to skip."""
    locked = query.limit(batch).with_for_update(skip_locked=True)
    return list((await conn.execute(locked)).scalars().all())


async def _jobs(conn: AsyncConnection, ids: Sequence[str], box: SecretBox) -> list[Job]:
    """The jobs of ``ids`` with their secrets opened (``SecretUnreadable`` if one can't be)."""
    rows = await conn.execute(
        select(
            *_DUE_COLUMNS,
            webhooks.c.url,
            webhooks.c.secret,
            webhooks.c.previous_secret,
            webhooks.c.previous_secret_expires_at,
        )
        .join(webhooks, webhooks.c.id == deliveries.c.webhook_id)
        .join(events, events.c.id == deliveries.c.event_id)
        .where(deliveries.c.id.in_(ids))
    )
    return [
        _job(
            r,
            r.url,
            WebhookSecrets(
                box.open(r.secret),
                box.open_optional(r.previous_secret),
                r.previous_secret_expires_at,
            ),
            iso_utc(r.timestamp),
            accepted_at=r.created_at,
        )
        for r in rows
    ]


def _job(
    row: Row,
    url: str,
    secrets: WebhookSecrets,
    timestamp: str,
    leased_until: datetime | None = None,
    accepted_at: datetime | None = None,
) -> Job:
    """A job from a row of the due columns (``_DUE_BRANCH_SQL``'s order), its webhook's
    address and secrets, and the event's timestamp as the payload writes it."""
    return Job(
        delivery_id=row[0],
        webhook_id=row[1],
        url=url,
        secrets=secrets,
        event_id=row[3],
        event_type=row[4],
        data_json=row[8],
        timestamp=timestamp,
        attempt_count=row[5],
        schedule_step=row[6],
        is_test=bool(row[7]),
        leased_until=leased_until,
        accepted_at=accepted_at,
        trace_context=row[11],
    )


async def _update_health(
    tx: Direct,
    healthy: set[str],
    failing: set[str],
    gone: dict[str, str],
    *,
    now: datetime,
    auto_disable_after: timedelta,
) -> list[str]:
    stored_now = tx.when(now)
    await tx.execute_many(_RECOVERED_SQL, [(w,) for w in healthy])
    await tx.execute_many(_FAILING_SQL, [(stored_now, w) for w in failing])
    # UPDATE ... RETURNING (SQLite 3.35+): the status is checked as the row is written,
    # so two workers never both disable a webhook, nor overwrite its owner's reason.
    disabled: list[str] = []
    for webhook_id, reason in gone.items():
        rows = await tx.fetch(_DISABLE_SQL, (DISABLED, reason, stored_now, webhook_id, ACTIVE))
        disabled.extend(r[0] for r in rows)
    ids = sorted(failing - set(disabled))
    if ids:
        stale = await tx.fetch(
            "UPDATE webhooks SET status = ?, disabled_reason = ?, updated_at = ?"  # noqa: S608
            f" WHERE id IN ({marks(len(ids))}) AND status = ? AND failing_since IS NOT NULL"
            " AND failing_since <= ? RETURNING id",
            (
                DISABLED,
                auto_disable_reason(auto_disable_after),
                stored_now,
                *ids,
                ACTIVE,
                tx.when(now - auto_disable_after),
            ),
        )
        disabled.extend(r[0] for r in stale)
    return disabled
