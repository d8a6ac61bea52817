"""Driver-level transactions (store.direct) on a real database: they see and write the
same values as SQLAlchemy, commit together, roll back together, and report an outage
as StorageUnavailable."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bellhook.config import Settings
from bellhook.domain.timefmt import iso_utc
from bellhook.errors import ConfigurationError, StorageUnavailable
from bellhook.runtime import open_runtime
from bellhook.store import database as database_module
from bellhook.store.database import BUSY_TIMEOUT, Database
from bellhook.store.direct import (
    THREAD_AT,
    PostgresDirect,
    SqliteDirect,
    begin_immediate,
    marks,
)
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


@pytest.mark.parametrize("micros", [0, 1_999, 999_999])
async def test_stored_timestamps_read_as_payloads_write_them(
    make_settings: Callable[..., Settings], micros: int
) -> None:
    # iso_of (every claimed delivery's event timestamp) must give iso_utc's text for what
    # SQLAlchemy and the driver store: milliseconds cut, not rounded; any zone, as UTC.
    when = datetime(2026, 12, 31, 23, 59, 59, micros, tzinfo=timezone(timedelta(hours=-2)))
    async with open_runtime(make_settings()) as rt:
        hook = await admin_webhook(rt, when)
        async with rt.db.write() as conn:
            await conn.execute(
                update(webhooks).where(webhooks.c.id == hook.id).values(failing_since=when)
            )
        async with rt.db.direct() as tx:
            (stored,) = await tx.fetch("SELECT failing_since FROM webhooks", ())
            assert tx.iso_of(stored[0]) == iso_utc(when)
            assert tx.iso_of(tx.when(when)) == iso_utc(when)
    assert iso_utc(when) == f"2027-01-01T01:59:59.{micros // 1000:03d}Z"


def test_a_timestamp_stored_in_another_form_is_still_read_right() -> None:
    # Text SQLAlchemy and the driver never write, but SQLite would hold if given.
    assert SqliteDirect.iso_of("2026-03-04 21:59:59") == "2026-03-04T21:59:59.000Z"
    assert SqliteDirect.iso_of("2026-03-04T21:59:59.123456") == "2026-03-04T21:59:59.123Z"


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
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("CREATE TABLE t (x)")
        other.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await begin_immediate(conn, wait_up_to=0.05)
        assert loop.time() - started >= 0.05  # it tried until then, not just once
        assert not conn.in_transaction
    finally:
        conn.close()
        other.close()


def test_an_old_sqlite_is_refused_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(ConfigurationError, match=r"SQLite 3\.35 or newer.*has 3\.31\.1"):
        Database(f"sqlite:///{tmp_path / 'old.db'}")


def test_an_in_memory_sqlite_is_refused_with_a_clear_error() -> None:
    for url in (
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///file:shared?mode=memory&cache=shared&uri=true",
    ):
        with pytest.raises(ConfigurationError, match=r"in-memory.*sqlite:///bellhook\.db"):
            Database(url)


# The queue's own SQLite connection (Database.direct): white-box where a failure has to
# be provoked inside it.


@pytest.fixture
async def databases() -> AsyncIterator[Callable[[str], Database]]:
    """Databases closed at teardown, even after a failed assertion (the checkpointer's
    open aiosqlite connection has a thread that would keep the test run from exiting)."""
    made: list[Database] = []

    def make(url: str) -> Database:
        made.append(Database(url))
        return made[-1]

    yield make
    for db in made:
        await db.close()


async def queue_of(db: Database, first: str = "SELECT 1") -> sqlite3.Connection:
    """The queue's own connection, opened by a transaction that runs ``first``."""
    async with db.direct() as tx:
        await tx.fetch(first)
    queue = db._queue_connection
    assert queue is not None
    return queue


async def test_the_queue_connection_is_closed_with_the_database(
    tmp_path: Path, databases: Callable[[str], Database]
) -> None:
    db = databases(f"sqlite:///{tmp_path / 'closing.db'}")
    await db.migrate()
    queue = await queue_of(db)
    await db.close()
    assert db._queue_connection is None
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        queue.execute("SELECT 1")
    async with db.direct() as tx:  # opened anew if used again
        assert [tuple(r) for r in await tx.fetch("SELECT 1")] == [(1,)]


async def test_close_waits_for_the_transaction_under_way(
    tmp_path: Path, databases: Callable[[str], Database]
) -> None:
    db = databases(f"sqlite:///{tmp_path / 'busy.db'}")
    entered, release = asyncio.Event(), asyncio.Event()

    async def transaction() -> list[Any]:
        async with db.direct() as tx:
            entered.set()
            await release.wait()
            return await tx.fetch("SELECT 1")

    task = asyncio.create_task(transaction())
    await entered.wait()
    closing = asyncio.create_task(db.close())
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        assert not closing.done()  # it waits its turn behind the transaction
    finally:
        release.set()
    assert [tuple(r) for r in await task] == [(1,)]  # which ends normally
    await closing
    assert db._queue_connection is None


async def test_a_transaction_whose_caller_was_cancelled_is_rolled_back(
    tmp_path: Path, databases: Callable[[str], Database]
) -> None:
    """A transaction cancelled while its block awaits (a flush cut short at stop) must not
    stay open, holding the write lock for this process and every other, nor keep what it
    wrote."""
    path = tmp_path / "cancel.db"
    db = databases(f"sqlite:///{path}")
    await db.migrate()
    async with db.direct() as tx:
        await tx.fetch("CREATE TABLE probe (x INTEGER)")
    entered = asyncio.Event()

    async def claim() -> None:
        async with db.direct() as tx:
            await tx.execute_many("INSERT INTO probe VALUES (?)", [(1,)])
            entered.set()
            await asyncio.Event().wait()  # cancelled here, mid-transaction

    task = asyncio.create_task(claim())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.direct() as tx:  # the next transaction begins normally
        assert [tuple(r) for r in await tx.fetch("SELECT count(*) FROM probe")] == [(0,)]
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # and no lock was left behind
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_failed_rollback_closes_the_connection_and_the_next_reopens(
    tmp_path: Path, databases: Callable[[str], Database]
) -> None:
    db = databases(f"sqlite:///{tmp_path / 'rollback.db'}")
    queue = await queue_of(db)

    def no_rollback(action: int, arg: str | None, *_: object) -> int:
        refused = action == sqlite3.SQLITE_TRANSACTION and arg == "ROLLBACK"
        return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

    queue.set_authorizer(no_rollback)
    with pytest.raises(StorageUnavailable):
        async with db.direct() as tx:
            await tx.fetch("SELECT no_such_column")  # the block fails; so does its rollback
    assert db._queue_connection is None
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        queue.execute("SELECT 1")  # closed: what it had begun is undone
    async with db.direct() as tx:
        assert [tuple(r) for r in await tx.fetch("SELECT 1")] == [(1,)]
    assert db._queue_connection is not queue


async def test_a_uri_filename_is_one_database_for_the_queue_and_the_pool(
    tmp_path: Path, databases: Callable[[str], Database]
) -> None:
    # A URI filename: the queue's connection and the pool's open the same database (the
    # pool's reads what the queue wrote).
    db = databases(f"sqlite:///file:{tmp_path / 'uri.db'}?uri=true&cache=private")
    async with db.direct() as tx:
        await tx.fetch("CREATE TABLE probe (x INTEGER)")
        await tx.execute_many("INSERT INTO probe VALUES (?)", [(1,), (2,)])
    async with db.read() as conn:
        assert (await conn.exec_driver_sql("SELECT count(*) FROM probe")).scalar() == 2
    await db.close()
    assert (tmp_path / "uri.db").exists()


async def test_a_failed_commit_is_rolled_back_and_the_next_transaction_begins(
    tmp_path: Path, databases: Callable[[str], Database]
) -> None:
    # A deferred foreign key is checked at COMMIT: the commit itself fails. The
    # transaction must not stay open on the connection.
    db = databases(f"sqlite:///{tmp_path / 'commit.db'}")
    async with db.direct() as tx:
        await tx.fetch("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await tx.fetch(
            "CREATE TABLE child (parent_id INTEGER"
            " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    with pytest.raises(IntegrityError):
        async with db.direct() as tx:
            await tx.execute_many("INSERT INTO child VALUES (?)", [(7,)])
    async with db.direct() as tx:
        assert [tuple(r) for r in await tx.fetch("SELECT count(*) FROM child")] == [(0,)]


async def test_large_statements_and_their_commit_run_beside_the_event_loop(
    tmp_path: Path, databases: Callable[[str], Database]
) -> None:
    """Statements of THREAD_AT rows or more run in a thread, and so does the commit
    after them; smaller ones run on the loop's thread."""
    db = databases(f"sqlite:///{tmp_path / 'large.db'}")
    queue = await queue_of(db, "CREATE TABLE t (x INTEGER)")
    on_loop: list[bool] = []

    def where(x: int) -> int:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return x

    queue.create_function("where_am_i", 1, where)
    insert = "INSERT INTO t VALUES (where_am_i(?))"
    for rows in (THREAD_AT - 1, THREAD_AT):
        on_loop.clear()
        async with db.direct() as tx:
            await tx.execute_many(insert, [(i,) for i in range(rows)])
            assert isinstance(tx, SqliteDirect) and tx.heavy is (rows >= THREAD_AT)
        assert set(on_loop) == {rows < THREAD_AT}
    on_loop.clear()
    async with db.direct() as tx:
        await tx.fetch("SELECT where_am_i(?) FROM t LIMIT 1", [1])
        await tx.fetch(
            f"SELECT where_am_i(1) FROM t WHERE x IN ({marks(THREAD_AT)}) LIMIT 1",
            list(range(THREAD_AT)),
        )
    assert on_loop == [True, False]


async def test_the_commit_that_starts_the_log_over_runs_in_a_thread(
    tmp_path: Path, databases: Callable[[str], Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With synchronous=NORMAL, that commit syncs the new log header to disk.
    db = databases(f"sqlite:///{tmp_path / 'restart.db'}")
    async with db.direct() as tx:
        await tx.fetch("CREATE TABLE t (x INTEGER)")
    checkpointer = db.checkpointer
    assert checkpointer is not None
    sent: list[tuple[Any, ...]] = []

    async def spy(function: Callable[..., Any], *args: Any) -> Any:
        sent.append(args)
        return function(*args)

    monkeypatch.setattr(database_module, "in_thread", spy)
    last = await checkpointer.checkpoint()
    assert last.copied_frames == last.log_frames > 0 and checkpointer.log_copied
    async with db.direct() as tx:  # reads only: the log does not start over here
        await tx.fetch("SELECT count(*) FROM t")
    assert sent == [] and checkpointer.log_copied
    for _ in range(2):
        async with db.direct() as tx:
            await tx.execute_many("INSERT INTO t VALUES (?)", [(1,)])
    assert sent == [("COMMIT",)]  # the first commit that wrote, not the second
    assert not checkpointer.log_copied


async def test_a_connection_opened_for_a_cancelled_caller_is_closed_with_the_database(
    tmp_path: Path, databases: Callable[[str], Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = databases(f"sqlite:///{tmp_path / 'opening.db'}")
    started, release = threading.Event(), threading.Event()
    opened: list[sqlite3.Connection] = []
    connect = db._connect_queue

    def slow_connect() -> sqlite3.Connection:
        started.set()
        release.wait(10)
        opened.append(connect())
        return opened[-1]

    monkeypatch.setattr(db, "_connect_queue", slow_connect)
    caller = asyncio.create_task(db.direct().__aenter__())
    assert await asyncio.to_thread(started.wait, 10)  # the opening is under way
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()
    await db.close()
    assert len(opened) == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].execute("SELECT 1")
