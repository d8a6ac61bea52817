"""SQLite's write-ahead log is copied by the checkpointer, never by the queue's commits
(store.wal), on real SQLite files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
import structlog

from bellhook.store.database import Database
from bellhook.store.wal import WalCheckpointer

PAGE = 4096  # SQLite's default page size


async def write_pages(db: Database, pages: int) -> None:
    """About ``pages`` pages of log, in a transaction per 8 pages (as the queue writes)."""
    async with db.direct() as tx:
        await tx.execute_many("CREATE TABLE IF NOT EXISTS filler (body BLOB)", [()])
    for _ in range(pages // 8):
        async with db.direct() as tx:
            await tx.execute_many("INSERT INTO filler VALUES (randomblob(?))", [(7 * PAGE,)])


async def test_queue_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "bellhook.db"
    db = Database(f"sqlite:///{path}", checkpoint_after=3600)  # no pass during the test
    try:
        checkpointer = db.checkpointer
        assert checkpointer is not None
        await write_pages(db, 2400)
        # SQLite's own checkpoint would have run in a commit past 1,000 pages, and the
        # log would have started over there: the file would hold about 1,000 pages.
        wal = path.with_name(path.name + "-wal")
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
    finally:
        await db.close()
    # SQLite's last connection copied what was left and removed the log.
    assert not wal.exists() or wal.stat().st_size == 0
    async with aiosqlite.connect(path) as check:
        rows = list(await check.execute_fetchall("SELECT count(*) FROM filler"))
    assert rows[0][0] == 2400 // 8 + 1


async def test_the_log_starts_over_while_the_queue_keeps_writing(tmp_path: Path) -> None:
    # A copy made while others commit ends behind them, and the log only starts over
    # at a commit that began with all of it copied: the checkpoint must still get there.
    path = tmp_path / "bellhook.db"
    db = Database(f"sqlite:///{path}", checkpoint_after=3600)
    stop = False
    wrote = asyncio.Event()

    async def writer() -> None:
        n = 0
        while not stop:
            async with db.direct() as tx:
                await tx.execute_many("INSERT INTO filler VALUES (randomblob(?))", [(PAGE,)])
            n += 1
            if n % 40 == 0:
                wrote.set()

    try:
        checkpointer = db.checkpointer
        assert checkpointer is not None
        await write_pages(db, 8)
        task = asyncio.create_task(writer())
        sizes = []
        for _ in range(6):
            await asyncio.wait_for(wrote.wait(), 30)
            wrote.clear()
            sizes.append((await checkpointer.checkpoint()).log_frames)
        stop = True
        await task
    finally:
        await db.close()
    # Each pass finds only what was written since the one before. Had the log not
    # started over, the sixth would find all six passes' worth.
    assert sizes[-1] < 3 * sizes[0], sizes


async def test_a_commit_is_followed_by_a_checkpoint_in_the_background(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'bellhook.db'}", checkpoint_after=0.01)
    try:
        checkpointer = db.checkpointer
        assert checkpointer is not None
        async with db.direct() as tx:
            await tx.fetch("SELECT 1")
        await asyncio.wait_for(checkpointer.passed.wait(), 10)
        checkpointer.passed.clear()
        await write_pages(db, 80)
        await asyncio.wait_for(checkpointer.passed.wait(), 10)
        last = checkpointer.last
        assert last is not None and not last.busy
        assert last.log_frames > 0
        assert last.copied_frames == last.log_frames
    finally:
        await db.close()


async def test_a_failed_checkpoint_is_logged_and_the_next_commit_tries_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bellhook.db"
    opened: list[aiosqlite.Connection] = []

    async def connect() -> aiosqlite.Connection:
        if not opened:  # the first try: the database file's directory is not there
            opened.append(await aiosqlite.connect(path))
            raise OSError("no such directory")
        connection = await aiosqlite.connect(path)
        opened.append(connection)
        return connection

    async with aiosqlite.connect(path) as setup:
        await setup.execute("PRAGMA journal_mode=WAL")
    checkpointer = WalCheckpointer(connect, asyncio.Lock(), after=0)
    try:
        with structlog.testing.capture_logs() as logs:
            checkpointer.written()
            await asyncio.wait_for(checkpointer.passed.wait(), 10)
        assert checkpointer.last is None
        assert [e["event"] for e in logs] == ["store.checkpoint_failed"]
        assert logs[0]["error"] == "OSError"
        checkpointer.passed.clear()
        checkpointer.written()
        await asyncio.wait_for(checkpointer.passed.wait(), 10)
        assert checkpointer.last is not None and not checkpointer.last.busy
    finally:
        await checkpointer.close()
        await opened[0].close()
    assert len(opened) == 2
