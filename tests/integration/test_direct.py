"""Driver-level transactions (store.direct) on a real database: they see and write the
same values as SQLAlchemy, commit together, roll back together, and report an outage
as StorageUnavailable."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bellhook.config import Settings
from bellhook.domain.models import Principal
from bellhook.errors import StorageUnavailable
from bellhook.runtime import open_runtime
from bellhook.store.direct import PostgresDirect
from bellhook.store.tables import webhooks

ADMIN = Principal(key_id="key_x", owner_id="ops", is_admin=True)


async def test_direct_statements_share_values_and_transactions_with_sqlalchemy(
    make_settings: Callable[..., Settings],
) -> None:
    # Microseconds and a non-UTC zone: the text SQLite holds must be SQLAlchemy's own.
    when = datetime(2026, 3, 4, 9, 8, 9, 123, tzinfo=timezone(timedelta(hours=2)))
    async with open_runtime(make_settings()) as rt:
        hook = await rt.webhooks.create(
            ADMIN,
            url="https://example.com/a",
            events=("*",),
            description=None,
            secret="s" * 20,
            now=when,
        )
        db = rt.db
        # Written by SQLAlchemy, compared and read back by the driver.
        async with db.write() as conn:
            await conn.execute(
                update(webhooks).where(webhooks.c.id == hook.id).values(failing_since=when)
            )
        async with db.direct() as tx:
            rows = await tx.fetch(
                "SELECT failing_since FROM webhooks WHERE id = ? AND failing_since = ?",
                (hook.id, tx.when(when)),
            )
            assert [tx.datetime_of(r[0]) for r in rows] == [when]

        # Written by the driver, read and compared by SQLAlchemy.
        later = when + timedelta(hours=5, microseconds=7)
        async with db.direct() as tx:
            await tx.execute_many(
                "UPDATE webhooks SET failing_since = ? WHERE id = ?", [(tx.when(later), hook.id)]
            )
        async with db.read() as conn:
            stored = (
                await conn.execute(
                    select(webhooks.c.failing_since).where(webhooks.c.failing_since == later)
                )
            ).scalar_one()
        assert stored == later

        # An error inside the block rolls back what the block wrote.
        with pytest.raises(RuntimeError):
            async with db.direct() as tx:
                await tx.execute_many(
                    "UPDATE webhooks SET failing_since = NULL WHERE id = ?", [(hook.id,)]
                )
                raise RuntimeError("after the write")
        async with db.read() as conn:
            kept = (
                await conn.execute(select(webhooks.c.failing_since).where(webhooks.c.id == hook.id))
            ).scalar_one()
        assert kept == later

        # A broken constraint is a conflict for the caller (ingest retries on it), as
        # from SQLAlchemy; nothing of the transaction stays.
        with pytest.raises(IntegrityError):
            async with db.direct() as tx:
                await tx.execute_many(
                    "UPDATE webhooks SET failing_since = NULL WHERE id = ?", [(hook.id,)]
                )
                await tx.execute_many(
                    "INSERT INTO api_keys (id, owner_id, is_admin, key_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [("key_dup", "ops", False, "h", tx.when(when))] * 2,
                )
        async with db.read() as conn:
            kept = (
                await conn.execute(select(webhooks.c.failing_since).where(webhooks.c.id == hook.id))
            ).scalar_one()
        assert kept == later

        # A statement the database refuses is an outage to the caller, not a driver error.
        with pytest.raises(StorageUnavailable):
            async with db.direct() as tx:
                await tx.fetch("SELECT no_such_column FROM webhooks")


def test_placeholders_are_numbered_for_asyncpg() -> None:
    sql = "UPDATE t SET a = ?, b = ? WHERE id = ? AND c = 'x'"
    assert PostgresDirect.numbered(sql) == "UPDATE t SET a = $1, b = $2 WHERE id = $3 AND c = 'x'"
    assert PostgresDirect.numbered("SELECT 1") == "SELECT 1"
