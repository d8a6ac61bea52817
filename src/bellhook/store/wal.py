"""Checkpoints of SQLite's write-ahead log, run beside the transactions that fill it.

In WAL mode SQLite copies the log back into the database file (a checkpoint) once the
log passes 1,000 pages, in the commit that crossed the line: that commit waits for
the copy. On the queue's connection this was the tail of the latencies we measured:
at 200 events/s, one ingest commit in a hundred took 3-5 ms longer than the others.

So the queue's connection checkpoints only as a backstop, past 10,000 pages, and this
class copies the log on a connection and a thread of its own, shortly after commits.
Other connections keep SQLite's own automatic checkpoints; they write rarely.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    import aiosqlite

log = structlog.get_logger("bellhook.store")

# How long after a commit the log is copied: the commits of that time share one copy
# (a few MB of log under full load).
CHECKPOINT_AFTER = 0.25
# The queue connection checkpoints itself past this many pages of log (40 MB): never
# while this runs, and a bound on the log if it cannot.
QUEUE_BACKSTOP_PAGES = 10_000
# After a failed checkpoint, the next try waits this long (the log keeps the pages).
RETRY_AFTER = 5.0


@dataclass(frozen=True)
class Checkpoint:
    """What one checkpoint did (SQLite's ``PRAGMA wal_checkpoint`` row)."""

    # Another process was writing or reading, or checkpointing (then the counts are -1):
    # what could be copied was, and the log starts over at a later pass.
    busy: bool
    log_frames: int  # pages in the log
    copied_frames: int  # of them, in the database file now


class WalCheckpointer:
    """Runs checkpoints on its own connection, ``after`` seconds after a commit calls
    ``written()``. Idle while nothing is written."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[aiosqlite.Connection]],
        turn: AbstractAsyncContextManager[Any],
        *,
        after: float = CHECKPOINT_AFTER,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self._connect = connect
        self._turn = turn  # the process's write turn (Database's)
        self._after = after
        self._retry_after = retry_after
        self._connection: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._written = asyncio.Event()
        self.last: Checkpoint | None = None  # the newest checkpoint
        self.passed = asyncio.Event()  # set after each background pass (tests await it)
        # All of the log was copied: the next commit that writes starts it over, and
        # syncs its new header (the queue connection then commits in a thread).
        self.log_copied = False

    def written(self) -> None:
        """A commit added pages to the log: copy them soon (starts the loop if needed)."""
        if self._closed:
            return
        self._written.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="bellhook-wal-checkpoints")

    async def checkpoint(self) -> Checkpoint:
        """Copy the log into the database file now, so that the next commit starts it
        over. Takes the write turn: never call it inside a transaction of this process.
        """
        if self._connection is None:
            self._connection = await self._connect()
        # The log starts over only at a commit that began when all of it had been
        # copied. A copy made while others commit ends behind them: under steady
        # writes the log never started over (it grew by 60 MB in an 8 s drain). So
        # PASSIVE copies the bulk while writers go on; then RESTART copies what they
        # committed meanwhile (a few pages), with this process's writers held off in
        # their turn and other processes' by SQLite's write lock, which it takes
        # without waiting (busy_timeout 0: if another process holds it, RESTART does
        # what PASSIVE does, and a later pass gets there).
        await self._connection.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
        async with self._turn:
            rows = list(await self._connection.execute_fetchall("PRAGMA wal_checkpoint(RESTART)"))
        busy, log_frames, copied = rows[0]
        self.last = Checkpoint(bool(busy), int(log_frames), int(copied))
        if not busy and log_frames > 0 and copied == log_frames:
            self.log_copied = True
        return self.last

    async def _run(self) -> None:
        while True:
            await self._written.wait()
            await asyncio.sleep(self._after)
            self._written.clear()  # commits from here on wait for the next pass
            try:
                await self.checkpoint()
            except Exception as exc:  # sqlite3's errors, a file gone: the loop must live on
                # Nothing is lost: the log keeps the pages, for the next pass (or the
                # queue connection's backstop, or SQLite's checkpoint at close).
                log.warning(
                    "store.checkpoint_failed",
                    error=type(exc).__name__,
                    sqlite_error=getattr(exc, "sqlite_errorname", None),
                )
                await self._close_connection()  # the next pass opens a fresh one
                self.passed.set()
                await asyncio.sleep(self._retry_after)
                continue
            self.passed.set()

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # its end, without swallowing our own cancellation
        await self._close_connection()

    async def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
