"""SQLite's write-ahead log is copied by the checkpointer, not in the queue's commits
(store.wal), on real SQLite files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
import structlog

from bellhook.store.database import Database
from bellhook.store.wal import WalCheckpointer

PAGE = 4096  # SQLite's default page size


@asynccontextmanager
async def checkpointed(path: Path, after: float) -> AsyncIterator[tuple[Database, WalCheckpointer]]:
    """A database on ``path`` whose checkpointer passes ``after`` seconds after a commit;
    closed at the end of the block."""
    db = Database(f"sqlite:///{path}", checkpoint_after=after)
    try:
        assert db.checkpointer is not None
        yield db, db.checkpointer
    finally:
        await db.close()


async def write_pages(db: Database, pages: int) -> None:
    """About ``pages`` pages of log, in a transaction per 8 pages (as the queue writes)."""
    async with db.direct() as tx:
        await tx.execute_many("CREATE TABLE IF NOT EXISTS filler (body BLOB)", [()])
    for _ in range(pages // 8):
        async with db.direct() as tx:
            await tx.execute_many("INSERT INTO filler VALUES (randomblob(?))", [(7 * PAGE,)])


async def test_queue_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "bellhook.db"
    wal = path.with_name(path.name + "-wal")
    # No pass during the test.
    async with checkpointed(path, after=3600) as (db, checkpointer):
        await write_pages(db, 2400)
        # SQLite's own checkpoint would have run in a commit past 1,000 pages, and the
        # log would have started over there: the file would hold about 1,000 pages.
        assert wal.stat().st_size > 2000 * PAGE
        assert checkpointer.last is None

        done = await checkpointer.checkpoint()
        assert not done.busy
        assert done.log_frames > 2000
        assert done.copied_frames == done.log_frames  # everything is in the file now

        # The next commit starts the log over, so it stays as small as what is written
        # between two checkpoints.
        await write_pages(db, 8)
        again = await checkpointer.checkpoint()
        assert 0 < again.log_frames < 50
        assert again.copied_frames == again.log_frames
    # SQLite's last connection copied what was left and removed the log.
    assert not wal.exists() or wal.stat().st_size == 0
    async with aiosqlite.connect(path) as check:
        rows = list(await check.execute_fetchall("SELECT count(*) FROM filler"))
    assert rows[0][0] == 2400 // 8 + 1


def restarts_of(wal: Path) -> int:
    """How many times the log started over: the checkpoint sequence number in its
    header (https://www.sqlite.org/fileformat.html#the_write_ahead_log)."""
    return int.from_bytes(wal.read_bytes()[12:16], "big")


async def test_the_log_starts_over_while_the_queue_keeps_writing(tmp_path: Path) -> None:
    # A copy made while others commit ends behind them, and the log only starts over
    # at a commit that began with all of it copied: the checkpoint must still get there.
    path = tmp_path / "bellhook.db"
    wal = path.with_name(path.name + "-wal")
    db = Database(f"sqlite:///{path}", checkpoint_after=3600)
    stop = False
    wrote = asyncio.Event()

    async def writer() -> None:
        n = 0
        while not stop:
            async with db.direct() as tx:
                await tx.execute_many("INSERT INTO filler VALUES (randomblob(?))", [(PAGE,)])
            # The queue's statements run on the loop's thread and do not yield; a real
            # writer (the dispatcher) awaits its requests between transactions.
            await asyncio.sleep(0)
            n += 1
            if n % 40 == 0:
                wrote.set()

    task: asyncio.Task[None] | None = None
    try:
        checkpointer = db.checkpointer
        assert checkpointer is not None
        await write_pages(db, 8)
        before = restarts_of(wal)
        task = asyncio.create_task(writer())
        for _ in range(6):
            await asyncio.wait_for(wrote.wait(), 30)
            wrote.clear()
            await checkpointer.checkpoint()  # while the writer goes on
        await asyncio.wait_for(wrote.wait(), 30)  # commits after the sixth pass
        stop = True
        await task
        # The log started over after each pass.
        assert restarts_of(wal) - before == 6
    finally:
        stop = True
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        await db.close()


async def test_a_commit_is_followed_by_a_checkpoint_in_the_background(tmp_path: Path) -> None:
    async with checkpointed(tmp_path / "bellhook.db", after=0.01) as (db, checkpointer):
        await write_pages(db, 80)
        await asyncio.wait_for(checkpointer.passed.wait(), 10)
        last = checkpointer.last
        assert last is not None and not last.busy
        assert last.log_frames > 0
        assert last.copied_frames == last.log_frames


async def test_a_transaction_that_changed_nothing_wakes_no_checkpoint(tmp_path: Path) -> None:
    # An idle worker's claims find nothing and commit nothing: no pass for them.
    async with checkpointed(tmp_path / "bellhook.db", after=0) as (db, checkpointer):
        async with db.direct() as tx:
            await tx.fetch("SELECT count(*) FROM sqlite_master")
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "bellhook-wal-checkpoints"]
        assert not checkpointer.passed.is_set() and checkpointer.last is None
        await write_pages(db, 8)  # rows changed: a pass follows
        await asyncio.wait_for(checkpointer.passed.wait(), 10)
        assert checkpointer.last is not None


async def test_a_failed_checkpoint_is_logged_and_the_next_pass_reconnects(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bellhook.db"
    opened: list[aiosqlite.Connection] = []

    async def connect() -> aiosqlite.Connection:
        connection = await aiosqlite.connect(path)
        opened.append(connection)
        if len(opened) == 1:  # a connection that fails its first checkpoint
            await connection.close()
        return connection

    async with aiosqlite.connect(path) as setup:
        await setup.execute("PRAGMA journal_mode=WAL")
    checkpointer = WalCheckpointer(connect, asyncio.Lock(), after=0, retry_after=0)
    try:
        with structlog.testing.capture_logs() as logs:
            checkpointer.written()
            await asyncio.wait_for(checkpointer.passed.wait(), 10)
        assert checkpointer.last is None
        assert [e["event"] for e in logs] == ["store.checkpoint_failed"]
        checkpointer.passed.clear()
        checkpointer.written()
        await asyncio.wait_for(checkpointer.passed.wait(), 10)
        # The failed connection was dropped, and the pass ran on a new one.
        assert len(opened) == 2
        assert checkpointer.last is not None and not checkpointer.last.busy
    finally:
        await checkpointer.close()
    # Closed, a commit starts no pass again.
    checkpointer.written()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "bellhook-wal-checkpoints"]
