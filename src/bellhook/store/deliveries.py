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
    CompoundSelect,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    tuple_,
    union_all,
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
from bellhook.domain.routing import Candidate, pick_claims
from bellhook.errors import NotFound
from bellhook.store.database import Database
from bellhook.store.rows import to_attempt, to_delivery
from bellhook.store.secretbox import OpenedSecrets, SecretBox
from bellhook.store.tables import attempts, deliveries, events, webhooks

CLAIM_BRANCHES = 100  # webhooks looked at per claim statement
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
)


# What a delivery needs of its webhook: where, and how to sign.
TARGET_COLUMNS = (
    webhooks.c.id,
    webhooks.c.url,
    webhooks.c.secret,
    webhooks.c.previous_secret,
    webhooks.c.previous_secret_expires_at,
)


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    secrets: WebhookSecrets
    room: int  # deliveries it may still take


@dataclass(frozen=True, slots=True)
class Job:
    """A delivery taken for sending, with everything the sender needs."""

    delivery_id: str
    webhook_id: str
    url: str
    secrets: WebhookSecrets
    event_id: str
    event_type: str
    data_json: str
    timestamp: datetime
    attempt_count: int
    schedule_step: int
    is_test: bool
    leased_until: datetime | None = None  # when a claim's lease runs out (None: manual)


@dataclass(frozen=True, slots=True)
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
        per 100 webhooks), and the lease.
        """
        async with self.db.write() as conn:
            targets = await self._open_targets(conn, in_flight, per_webhook)
            rows: list[Any] = []
            hooks = list(targets)
            for start in range(0, len(hooks), CLAIM_BRANCHES):
                branch_hooks = hooks[start : start + CLAIM_BRANCHES]
                query = self._due_of(branch_hooks, targets, now)
                rows.extend((await conn.execute(query)).all())
            if len(hooks) > 1:
                rows.sort(key=lambda r: r.next_attempt_at)
            chosen = pick_claims(
                (Candidate(r.id, r.webhook_id) for r in rows),
                in_flight=in_flight,
                per_webhook=per_webhook,
                limit=limit,
            )
            if not chosen:
                return []
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(chosen))
                .values(next_attempt_at=now + lease)
            )
        picked = set(chosen)
        return [
            _job(r, targets[r.webhook_id].url, targets[r.webhook_id].secrets, now + lease)
            for r in rows
            if r.id in picked
        ]

    async def _open_targets(
        self, conn: AsyncConnection, in_flight: Mapping[str, int], per_webhook: int
    ) -> dict[str, _Target]:
        """Active webhooks with room for more deliveries, and where and how to send them.

        A webhook whose secret cannot be decrypted is left out (and logged), so that it
        cannot stall the whole queue; its deliveries wait until the key is configured.
        """
        rows = await conn.execute(
            select(*TARGET_COLUMNS).where(webhooks.c.status == WebhookStatus.ACTIVE.value)
        )
        targets: dict[str, _Target] = {}
        for r in rows:
            room = per_webhook - in_flight.get(r.id, 0)
            if room <= 0:
                continue
            secrets = self.opened.of(
                r.id, r.secret, r.previous_secret, r.previous_secret_expires_at
            )
            if secrets is not None:
                targets[r.id] = _Target(r.url, secrets, room)
        return targets

    def _due_of(
        self, hooks: Sequence[str], targets: Mapping[str, _Target], now: datetime
    ) -> CompoundSelect[Any] | Select[Any]:
        """The oldest due deliveries of each webhook, no more than it has room for.

        One index seek per webhook on ``(webhook_id, status, next_attempt_at)``: a dead
        receiver's backlog is never walked through to find a healthy webhook's work, so
        it cannot slow the others' claims down.
        """
        branches = []
        for webhook_id in hooks:
            branch = (
                select(*_DUE_COLUMNS)
                .join(events, events.c.id == deliveries.c.event_id)
                .where(
                    deliveries.c.webhook_id == webhook_id,
                    deliveries.c.status == DeliveryStatus.PENDING.value,
                    deliveries.c.next_attempt_at <= now,
                )
                .order_by(deliveries.c.next_attempt_at)
                .limit(targets[webhook_id].room)
            )
            if self.db.dialect == "postgresql":
                branch = branch.with_for_update(skip_locked=True, of=deliveries)
            branches.append(branch)
        if len(branches) == 1:
            return branches[0]
        return union_all(*(select(b.subquery()) for b in branches))

    async def release(self, jobs: Sequence[Job], *, now: datetime) -> None:
        """Give claimed deliveries that were never sent back to the queue, due now.

        Only those still under the lease they were claimed with: once it has run out,
        another worker may have claimed one (and be sending it, or have scheduled its
        retry), and making it due again would have it sent twice.
        """
        leases = [
            {"b_id": j.delivery_id, "b_lease": j.leased_until}
            for j in jobs
            if j.leased_until is not None
        ]
        if not leases:
            return
        async with self.db.write() as conn:
            await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id == bindparam("b_id"),
                    deliveries.c.next_attempt_at == bindparam("b_lease"),
                    deliveries.c.status == DeliveryStatus.PENDING.value,
                )
                .values(next_attempt_at=now),
                leases,
            )

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
        """Write attempts and next states in one transaction; returns webhooks disabled."""
        if not completed:
            return []
        attempt_rows: list[dict[str, Any]] = []
        scheduled: list[dict[str, Any]] = []
        manual: list[dict[str, Any]] = []
        healthy: set[str] = set()
        failing: set[str] = set()
        gone: dict[str, str] = {}
        for c, attempt_id in zip(completed, new_ids("att", len(completed)), strict=True):
            r, job = c.result, c.job
            attempt_rows.append(
                {
                    "id": attempt_id,
                    "delivery_id": job.delivery_id,
                    "webhook_id": job.webhook_id,
                    "number": job.attempt_count + 1,
                    "manual": c.decision is None,
                    "started_at": r.started_at,
                    "status_code": r.status_code,
                    "latency_ms": r.latency_ms,
                    "error_kind": r.error_kind.value if r.error_kind else None,
                    "error_message": r.error_message,
                    "response_excerpt": r.response_excerpt,
                }
            )
            common = {
                "b_id": job.delivery_id,
                "last_status_code": r.status_code,
                "last_error_kind": r.error_kind.value if r.error_kind else None,
                "updated_at": now,
            }
            if c.decision is None:
                manual.append({**common, "b_done": r.succeeded})
            else:
                scheduled.append(
                    {
                        **common,
                        "status": c.decision.status.value,
                        "next_attempt_at": c.decision.next_attempt_at,
                        "schedule_step": c.decision.schedule_step,
                    }
                )
            if reason := disable_reason(r):
                gone[job.webhook_id] = reason
            if not job.is_test:
                (healthy if r.succeeded else failing).add(job.webhook_id)
        async with self.db.write() as conn:
            await conn.execute(insert(attempts), attempt_rows)
            if scheduled:
                await conn.execute(
                    update(deliveries)
                    # A manual retry may have finished the delivery meanwhile: never undo it.
                    .where(
                        deliveries.c.id == bindparam("b_id"),
                        deliveries.c.status == DeliveryStatus.PENDING.value,
                    )
                    .values(
                        status=bindparam("status"),
                        next_attempt_at=bindparam("next_attempt_at"),
                        schedule_step=bindparam("schedule_step"),
                        attempt_count=deliveries.c.attempt_count + 1,
                        last_status_code=bindparam("last_status_code"),
                        last_error_kind=bindparam("last_error_kind"),
                        updated_at=bindparam("updated_at"),
                    ),
                    scheduled,
                )
            if manual:
                await _record_manual(conn, manual)
            return await _update_health(
                conn,
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
            return int(result.rowcount)

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
        query = (
            select(deliveries)
            .where(deliveries.c.webhook_id == webhook_id)
            .order_by(deliveries.c.created_at.desc(), deliveries.c.id.desc())
            .limit(limit + 1)
        )
        if status is not None:
            query = query.where(deliveries.c.status == status.value)
        if event_type is not None:
            query = query.where(deliveries.c.event_type == event_type)
        if cursor is not None:
            query = query.where(
                tuple_(deliveries.c.created_at, deliveries.c.id)
                < tuple_(cursor.created_at, cursor.id)
            )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        items = [to_delivery(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items, Cursor(items[-1].created_at, items[-1].id).encode() if more else None)

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

    async def counts(self) -> dict[str, int]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
            )
            return {status: int(n) for status, n in rows.all()}


async def _ids(conn: AsyncConnection, query: Select[Any], batch: int) -> list[str]:
    """The first ``batch`` ids ``query`` selects."""
    return list((await conn.execute(query.limit(batch))).scalars().all())


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
        )
        for r in rows
    ]


def _job(row: Any, url: str, secrets: WebhookSecrets, leased_until: datetime | None = None) -> Job:
    """A job from a row of ``_DUE_COLUMNS`` and its webhook's address and secrets."""
    return Job(
        delivery_id=row.id,
        webhook_id=row.webhook_id,
        url=url,
        secrets=secrets,
        event_id=row.event_id,
        event_type=row.event_type,
        data_json=row.data,
        timestamp=row.timestamp,
        attempt_count=row.attempt_count,
        schedule_step=row.schedule_step,
        is_test=bool(row.is_test),
        leased_until=leased_until,
    )


async def _record_manual(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    # A manual attempt never consumes the schedule: it can only finish the delivery.
    base = update(deliveries).where(deliveries.c.id == bindparam("b_id"))
    done = [r for r in rows if r["b_done"]]
    other = [r for r in rows if not r["b_done"]]
    fields = {
        "attempt_count": deliveries.c.attempt_count + 1,
        "last_status_code": bindparam("last_status_code"),
        "last_error_kind": bindparam("last_error_kind"),
        "updated_at": bindparam("updated_at"),
    }
    if done:
        await conn.execute(
            base.values(**fields, status=DeliveryStatus.SUCCEEDED.value, next_attempt_at=None),
            [{k: v for k, v in r.items() if k != "b_done"} for r in done],
        )
    if other:
        await conn.execute(
            base.values(**fields), [{k: v for k, v in r.items() if k != "b_done"} for r in other]
        )


async def _update_health(
    conn: AsyncConnection,
    healthy: set[str],
    failing: set[str],
    gone: dict[str, str],
    *,
    now: datetime,
    auto_disable_after: timedelta,
) -> list[str]:
    if healthy:
        await conn.execute(
            update(webhooks)
            .where(webhooks.c.id.in_(healthy), webhooks.c.failing_since.is_not(None))
            .values(failing_since=None)
        )
    if failing:
        await conn.execute(
            update(webhooks)
            .where(webhooks.c.id.in_(failing), webhooks.c.failing_since.is_(None))
            .values(failing_since=now)
        )
    disabled: list[str] = []
    for webhook_id, reason in gone.items():
        result = await conn.execute(
            update(webhooks)
            .where(webhooks.c.id == webhook_id, webhooks.c.status == WebhookStatus.ACTIVE.value)
            .values(status=WebhookStatus.DISABLED.value, disabled_reason=reason, updated_at=now)
        )
        if result.rowcount:
            disabled.append(webhook_id)
    if failing:
        stale = (
            (
                await conn.execute(
                    select(webhooks.c.id).where(
                        webhooks.c.id.in_(failing),
                        webhooks.c.status == WebhookStatus.ACTIVE.value,
                        and_(
                            webhooks.c.failing_since.is_not(None),
                            webhooks.c.failing_since <= now - auto_disable_after,
                        ),
                    )
                )
            )
            .scalars()
            .all()
        )
        if stale:
            await conn.execute(
                update(webhooks)
                .where(webhooks.c.id.in_(stale))
                .values(
                    status=WebhookStatus.DISABLED.value,
                    updated_at=now,
                    disabled_reason=auto_disable_reason(auto_disable_after),
                )
            )
            disabled.extend(stale)
    return disabled
