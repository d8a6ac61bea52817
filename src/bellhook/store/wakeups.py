"""Wake-ups across processes: PostgreSQL ``LISTEN/NOTIFY`` on the channel ``bellhook_work``.

After a commit that leaves deliveries due now (ingest that no dispatcher of its own
process took, a give-back, a recovery, a webhook enabled again), the process sends
``NOTIFY bellhook_work`` (``store.notifier``: one for many commits at once, however many
deliveries they made). Every worker process listens on a
connection of its own, outside the pool, and wakes its dispatcher, which claims at once
instead of at its next poll. Polling (``BELLHOOK_POLL_INTERVAL``) stays the fallback: a
notification lost while the listener reconnects costs one poll interval, nothing more.

The listener needs a session connection: behind a transaction-pooling PgBouncer, give
it a direct URL to PostgreSQL (``BELLHOOK_LISTEN_DATABASE_URL``).

SQLite has no notifications: processes on one file poll, and a process's own ingest
wakes its own dispatcher directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog

from bellhook.store.database import Database, async_url
from bellhook.store.direct import WORK_CHANNEL

CHECK_EVERY = 10.0  # seconds between checks that a quiet connection is still there
RECONNECT_FIRST = 0.2  # seconds; doubled after each failed try, up to RECONNECT_MOST
RECONNECT_MOST = 5.0

log = structlog.get_logger("bellhook.wakeups")

# asyncpg.connect's keyword options that a database URL's query may carry.
_CONNECT_OPTIONS = frozenset(
    {"host", "port", "user", "password", "passfile", "database", "ssl", "direct_tls",
     "server_settings", "target_session_attrs", "krbsrvname", "gsslib"}
)  # fmt: skip


class WorkListener:
    """Calls ``on_wake`` for each notification, and when (re)connected, since
    notifications sent while it was away are lost. Reconnects by itself."""

    def __init__(
        self,
        db: Database,
        on_wake: Callable[[], None],
        *,
        url: str | None = None,
        check_every: float = CHECK_EVERY,
    ) -> None:
        target = async_url(url) if url else db.url
        _args, options = db.engine.dialect.create_connect_args(target)
        # What asyncpg.connect takes of the URL's options (SQLAlchemy's dialect adds its
        # own, such as prepared_statement_cache_size, which asyncpg would refuse).
        self._connect_args = {k: v for k, v in options.items() if k in _CONNECT_OPTIONS}
        self._timeout = db.pool.connect_timeout
        self._on_wake = on_wake
        self._check_every = check_every
        self.connected = asyncio.Event()  # set while listening (for /healthz and tests)

    async def run(self) -> None:
        delay = RECONNECT_FIRST
        lost_at: float | None = None
        first = True
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection = await self._listen()
            except Exception as exc:
                if lost_at is None:
                    lost_at = loop.time()
                    log.warning(
                        "wakeups.listener_unavailable",
                        error=type(exc).__name__,
                        message="polling until the database is back",
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MOST)
                continue
            if first:
                log.info("wakeups.listening", channel=WORK_CHANNEL)
            elif lost_at is not None:
                log.info(
                    "wakeups.listener_reconnected", after_seconds=round(loop.time() - lost_at, 1)
                )
            first, lost_at = False, None
            self.connected.set()
            self._on_wake()  # whatever was notified while it was away
            opened_at = loop.time()
            try:
                await self._watch(connection)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), self._timeout)
            lost_at = loop.time()
            log.warning("wakeups.listener_lost", message="reconnecting; polling meanwhile")
            self._on_wake()
            if lost_at - opened_at >= self._check_every:
                delay = RECONNECT_FIRST  # it had held: the next loss starts over
            else:  # lost again at once (a server that closes idle sessions): slow down
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MOST)

    async def _listen(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]  # only with PostgreSQL

        connection = await asyncpg.connect(
            **self._connect_args,
            timeout=self._timeout,
            server_settings={"application_name": "bellhook-listener"},
        )
        try:
            await connection.add_listener(WORK_CHANNEL, self._notified)
        except BaseException:
            connection.terminate()
            raise
        return connection

    def _notified(self, *_args: Any) -> None:
        self._on_wake()

    async def _watch(self, connection: Any) -> None:
        """Until the connection is lost: asyncpg says when the server closes it; a
        connection cut without a word (a network gone) fails the periodic check."""
        closed = asyncio.Event()
        connection.add_termination_listener(lambda _conn: closed.set())
        while not closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), self._check_every)
            if closed.is_set():
                return
            try:
                await connection.fetchval("SELECT 1", timeout=self._timeout)
            except Exception:  # whatever the cause, a new connection is the cure
                return


@asynccontextmanager
async def listening(
    db: Database, on_wake: Callable[[], None], *, url: str | None = None
) -> AsyncIterator[WorkListener | None]:
    """A listener for the duration of the block, on PostgreSQL; None on SQLite."""
    if db.dialect != "postgresql":
        yield None
        return
    listener = WorkListener(db, on_wake, url=url)
    task = asyncio.create_task(listener.run(), name="bellhook-listener")
    try:
        yield listener
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
