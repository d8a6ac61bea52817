"""Webhooks: the owner-scoped repository behind the management API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bellhook.domain.ids import is_wellformed, new_id
from bellhook.domain.models import Principal, Webhook, WebhookSecrets, WebhookStatus
from bellhook.domain.paging import Cursor, Page
from bellhook.errors import LimitExceeded, NotFound
from bellhook.store.database import Database
from bellhook.store.paging import newest_first, page_of
from bellhook.store.rows import to_webhook
from bellhook.store.secretbox import PREFIX, SecretBox
from bellhook.store.tables import attempts, deliveries, webhooks


@dataclass(frozen=True, slots=True)
class WebhookChanges:
    """Fields a PUT/PATCH sets; None means "leave as it is"."""

    url: str | None = None
    events: tuple[str, ...] | None = None
    description: str | None = None
    status: WebhookStatus | None = None
    clear_description: bool = False


def _check_id(webhook_id: str) -> None:
    # A string that cannot be an id is simply not found (and never reaches the database,
    # which may refuse some characters, e.g. NUL on PostgreSQL).
    if not is_wellformed(webhook_id):
        raise NotFound(f"no webhook with id {webhook_id!r}")


def _visible_to(principal: Principal) -> ColumnElement[bool]:
    # Admin keys manage every webhook; other owners see only their own (and get 404 otherwise).
    return true() if principal.is_admin else webhooks.c.owner_id == principal.owner_id


def _owned_by(principal: Principal) -> ColumnElement[bool]:
    # A signing secret is its owner's alone, admin keys included: an admin managing a
    # webhook never needs to impersonate its receiver.
    return webhooks.c.owner_id == principal.owner_id


@dataclass(frozen=True, slots=True)
class Reencrypted:
    """What ``bellhook secrets reencrypt`` did."""

    webhooks: int  # webhooks looked at
    changed: int  # webhooks whose stored secrets were rewritten


class WebhookRepository:
    def __init__(
        self, db: Database, *, max_per_owner: int, secretbox: SecretBox | None = None
    ) -> None:
        self.db = db
        self.max_per_owner = max_per_owner
        # Seals secrets on the way in and opens them on the way out (see secretbox).
        self.box = secretbox if secretbox is not None else SecretBox()

    async def create(
        self,
        principal: Principal,
        *,
        url: str,
        events: tuple[str, ...],
        description: str | None,
        secret: str,
        now: datetime,
    ) -> Webhook:
        webhook_id = new_id("wh")
        async with self.db.write() as conn:
            if self.db.dialect == "postgresql":
                # Count-then-insert must not interleave with another create of this owner.
                await conn.execute(
                    select(func.pg_advisory_xact_lock(func.hashtext(principal.owner_id)))
                )
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(webhooks)
                    .where(webhooks.c.owner_id == principal.owner_id)
                )
            ).scalar_one()
            if count >= self.max_per_owner:
                raise LimitExceeded(
                    f"an owner may have at most {self.max_per_owner} webhooks; "
                    "delete one or raise BELLHOOK_MAX_WEBHOOKS_PER_OWNER",
                    details=[{"limit": self.max_per_owner}],
                )
            await conn.execute(
                webhooks.insert().values(
                    id=webhook_id,
                    owner_id=principal.owner_id,
                    admin_owned=principal.is_admin,
                    url=url,
                    events=json.dumps(list(events)),
                    description=description,
                    status=WebhookStatus.ACTIVE.value,
                    secret=self.box.seal(secret),
                    created_at=now,
                    updated_at=now,
                )
            )
        return Webhook(
            id=webhook_id,
            owner_id=principal.owner_id,
            admin_owned=principal.is_admin,
            url=url,
            events=events,
            description=description,
            status=WebhookStatus.ACTIVE,
            disabled_reason=None,
            created_at=now,
            updated_at=now,
        )

    async def get(self, principal: Principal, webhook_id: str) -> Webhook:
        async with self.db.read() as conn:
            return await self._get(conn, principal, webhook_id)

    async def _get(self, conn: AsyncConnection, principal: Principal, webhook_id: str) -> Webhook:
        _check_id(webhook_id)
        row = (
            await conn.execute(
                select(webhooks).where(webhooks.c.id == webhook_id, _visible_to(principal))
            )
        ).first()
        if row is None:
            raise NotFound(f"no webhook with id {webhook_id!r}")
        return to_webhook(row)

    async def list(
        self, principal: Principal, *, limit: int, cursor: Cursor | None
    ) -> Page[Webhook]:
        query = newest_first(
            select(webhooks).where(webhooks.c.owner_id == principal.owner_id),
            webhooks,
            limit=limit,
            cursor=cursor,
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return page_of(rows, limit, to_webhook)

    async def update(
        self, principal: Principal, webhook_id: str, changes: WebhookChanges, *, now: datetime
    ) -> Webhook:
        values: dict[str, Any] = {"updated_at": now}
        if changes.url is not None:
            values["url"] = changes.url
        if changes.events is not None:
            values["events"] = json.dumps(list(changes.events))
        if changes.description is not None or changes.clear_description:
            values["description"] = changes.description
        if changes.status is WebhookStatus.ACTIVE:
            values.update(status="active", disabled_reason=None, failing_since=None)
        elif changes.status is WebhookStatus.DISABLED:
            values.update(status="disabled", disabled_reason="disabled by its owner")
        async with self.db.write() as conn:
            current = await self._get(conn, principal, webhook_id)
            if changes.status is current.status is WebhookStatus.DISABLED:
                values.pop("disabled_reason")  # keep the original reason
            await conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(values))
            updated = await self._get(conn, principal, webhook_id)
        if changes.status is WebhookStatus.ACTIVE and current.status is not changes.status:
            self.db.work_due()  # its waiting deliveries are due again
        return updated

    async def delete(self, principal: Principal, webhook_id: str) -> None:
        async with self.db.write() as conn:
            await self._get(conn, principal, webhook_id)
            await conn.execute(delete(attempts).where(attempts.c.webhook_id == webhook_id))
            await conn.execute(delete(deliveries).where(deliveries.c.webhook_id == webhook_id))
            await conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id))

    async def secrets(self, principal: Principal, webhook_id: str) -> WebhookSecrets:
        _check_id(webhook_id)
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        webhooks.c.secret,
                        webhooks.c.previous_secret,
                        webhooks.c.previous_secret_expires_at,
                    ).where(webhooks.c.id == webhook_id, _owned_by(principal))
                )
            ).first()
        if row is None:
            raise NotFound(f"no webhook with id {webhook_id!r}")
        return WebhookSecrets(
            self.box.open(row.secret),
            self.box.open_optional(row.previous_secret),
            row.previous_secret_expires_at,
        )

    async def rotate_secret(
        self,
        principal: Principal,
        webhook_id: str,
        *,
        new_secret: str,
        grace: timedelta,
        now: datetime,
    ) -> WebhookSecrets:
        _check_id(webhook_id)
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    select(webhooks.c.secret).where(
                        webhooks.c.id == webhook_id, _owned_by(principal)
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"no webhook with id {webhook_id!r}")
            keep_old = grace.total_seconds() > 0
            old_secret = self.box.open(row.secret) if keep_old else None
            await conn.execute(
                update(webhooks)
                .where(webhooks.c.id == webhook_id)
                .values(
                    secret=self.box.seal(new_secret),
                    previous_secret=self.box.seal(old_secret) if old_secret is not None else None,
                    previous_secret_expires_at=now + grace if keep_old else None,
                    updated_at=now,
                )
            )
        return WebhookSecrets(new_secret, old_secret, now + grace if keep_old else None)

    # --- secrets at rest ------------------------------------------------------------------

    async def check_stored_secrets(self, *, sample: int = 100) -> None:
        """Fail fast (``SecretUnreadable``) if stored secrets cannot be read with our keys.

        Decrypts up to ``sample`` encrypted values, so a missing or wrong
        BELLHOOK_ENCRYPTION_KEY stops the process at start rather than at the
        first delivery.
        """
        sealed = or_(
            webhooks.c.secret.startswith(PREFIX), webhooks.c.previous_secret.startswith(PREFIX)
        )
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(webhooks.c.secret, webhooks.c.previous_secret)
                    .where(sealed)
                    .limit(sample)
                )
            ).all()
        for row in rows:
            self.box.open(row.secret)
            self.box.open_optional(row.previous_secret)

    async def counts_by_status(self) -> dict[str, int]:
        """How many webhooks there are of each status (every status, 0 included)."""
        query = select(webhooks.c.status, func.count()).group_by(webhooks.c.status)
        async with self.db.read() as conn:
            found = {status: int(n) for status, n in (await conn.execute(query)).all()}
        return {str(status): found.get(str(status), 0) for status in WebhookStatus} | found

    async def has_plain_secrets(self) -> bool:
        """True if some stored secret is not encrypted (stored before a key was set)."""
        plain = or_(
            ~webhooks.c.secret.startswith(PREFIX), ~webhooks.c.previous_secret.startswith(PREFIX)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(select(webhooks.c.id).where(plain).limit(1))).first()
        return row is not None

    async def reencrypt_secrets(self, *, batch: int = 500) -> Reencrypted:
        """Rewrite every stored secret sealed with the first key (plain ones included).

        Safe while bellhook runs: a row changed meanwhile (a rotation) is left
        as the other writer stored it, which is already with the current keys.
        """
        after = ""
        seen = changed = 0
        while True:
            async with self.db.write() as conn:
                rows = (
                    await conn.execute(
                        select(webhooks.c.id, webhooks.c.secret, webhooks.c.previous_secret)
                        .where(webhooks.c.id > after)
                        .order_by(webhooks.c.id)
                        .limit(batch)
                    )
                ).all()
                for row in rows:
                    secret = self.box.reseal(row.secret)
                    previous = (
                        self.box.reseal(row.previous_secret)
                        if row.previous_secret is not None
                        else None
                    )
                    if secret == row.secret and previous == row.previous_secret:
                        continue
                    result = await conn.execute(
                        update(webhooks)
                        .where(
                            webhooks.c.id == row.id,
                            webhooks.c.secret == row.secret,
                            webhooks.c.previous_secret.is_not_distinct_from(row.previous_secret),
                        )
                        .values(secret=secret, previous_secret=previous)
                    )
                    changed += result.rowcount
            if not rows:
                return Reencrypted(webhooks=seen, changed=changed)
            seen += len(rows)
            after = rows[-1].id
