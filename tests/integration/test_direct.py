"""Driver-level transactions (store.direct) on a real database: they see and write the
same values as SQLAlchemy, commit together, roll back together, and report an outage
as StorageUnavailable."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bellhook.config import Settings
from bellhook.errors import ConfigurationError, StorageUnavailable
from bellhook.runtime import open_runtime
from bellhook.store.database import BUSY_TIMEOUT, Database
from bellhook.store.direct import PostgresDirect, begin_immediate
from bellhook.store.tables import webhooks
from tests.support import admin_webhook


async def test_direct_statements_share_values_and_transactions_with_sqlalchemy(
    make_settings: Callable[..., Settings],
) -> None:
    # Microseconds and a non-UTC zone: the text SQLite holds must be SQLAlchemy's own.
    when = datetime(2026, 3, 4, 9, 8, 9, 123, tzinfo=timezone(timedelta(hours=2)))
    async with open_runtime(make_settings()) as rt:
        hook = await admin_webhook(rt, when)
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

        async def failing_since() -> datetime | None:
            async with db.read() as conn:
                query = select(webhooks.c.failing_since).where(webhooks.c.id == hook.id)
                value: datetime | None = (await conn.execute(query)).scalar_one()
                return value

        # An error inside the block rolls back what the block wrote.
        with pytest.raises(RuntimeError):
            async with db.direct() as tx:
                await tx.execute_many(
                    "UPDATE webhooks SET failing_since = NULL WHERE id = ?", [(hook.id,)]
                )
                raise RuntimeError("after the write")
        assert await failing_since() == later

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
        assert await failing_since() == later

        # A statement the database refuses is an outage to the caller, not a driver error.
        with pytest.raises(StorageUnavailable):
            async with db.direct() as tx:
                await tx.fetch("SELECT no_such_column FROM webhooks")


def test_placeholders_are_numbered_for_asyncpg() -> None:
    sql = "UPDATE t SET a = ?, b = ? WHERE id = ? AND c = 'x'"
    assert PostgresDirect.numbered(sql) == "UPDATE t SET a = $1, b = $2 WHERE id = $3 AND c = 'x'"
    assert PostgresDirect.numbered("SELECT 1") == "SELECT 1"


async def test_a_sqlite_writer_waits_out_another_process_then_proceeds(tmp_path: Path) -> None:
    """Another process's write transaction (here a plain sqlite3 connection) holds the
    lock: a direct transaction waits, without blocking the loop, then goes ahead once
    it is released. It waits by itself: its connection has no busy timeout of its own,
    while SQLAlchemy's pooled connections keep SQLite's."""
    path = tmp_path / "shared.db"
    async with open_runtime(Settings(database_url=f"sqlite:///{path}")) as rt:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            entered = asyncio.Event()

            async def write() -> list[Any]:
                async with rt.db.direct() as tx:
                    entered.set()
                    return await tx.fetch("PRAGMA busy_timeout")

            task = asyncio.create_task(write())
            done, _ = await asyncio.wait({task}, timeout=0.3)
            assert not done  # still waiting for the lock, and the loop ran meanwhile
            assert not entered.is_set()
            other.execute("COMMIT")
            rows = await task
        finally:
            other.close()
        assert entered.is_set()
        assert [tuple(r) for r in rows] == [(0,)]
        async with rt.db.read() as conn:
            pooled = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        assert pooled == int(BUSY_TIMEOUT * 1000)


async def test_a_sqlite_writer_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("CREATE TABLE t (x)")
        other.execute("BEGIN IMMEDIATE")
        async with aiosqlite.connect(path, isolation_level=None, timeout=0) as conn:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await begin_immediate(conn, wait_up_to=0.05)
            assert loop.time() - started >= 0.05  # it tried until then, not just once
    finally:
        other.close()


def test_an_old_sqlite_is_refused_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(ConfigurationError, match=r"SQLite 3\.35 or newer.*has 3\.31\.1"):
        Database(f"sqlite:///{tmp_path / 'old.db'}")


def test_an_in_memory_sqlite_is_refused_with_a_clear_error() -> None:
    for url in ("sqlite:///:memory:", "sqlite://"):
        with pytest.raises(ConfigurationError, match=r"in-memory.*sqlite:///bellhook\.db"):
            Database(url)


async def test_the_queue_connection_is_closed_with_the_database(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'closing.db'}")
    await db.migrate()
    async with db.direct() as tx:
        await tx.fetch("SELECT 1")
    def driver_threads() -> int:
        return sum("_connection_worker_thread" in t.name for t in threading.enumerate())

    assert driver_threads() >= 2  # the queue's connection and the pool's
    await db.close()
    assert driver_threads() == 0
    async with db.direct() as tx:  # opened anew if used again
        assert [tuple(r) for r in await tx.fetch("SELECT 1")] == [(1,)]
    await db.close()
