"""The database handle: engine creation from a user's URL, transactions, migrations."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bellhook.errors import ConfigurationError, StorageUnavailable
from bellhook.store.direct import (
    Direct,
    PostgresDirect,
    SqliteDirect,
    begin_immediate,
    driver_conflicts,
    driver_errors,
    in_thread,
)
from bellhook.store.notifier import WorkNotifier
from bellhook.store.wal import CHECKPOINT_AFTER, QUEUE_BACKSTOP_PAGES, WalCheckpointer

if TYPE_CHECKING:
    import aiosqlite

    from bellhook.config import Settings

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def async_url(database_url: str) -> URL:
    """Turn ``sqlite:///x.db`` or ``postgresql://u@h/db`` into the URL of its async driver."""
    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise ConfigurationError(f"BELLHOOK_DATABASE_URL is not a database URL: {exc}") from exc
    backend = url.drivername.split("+", 1)[0]
    if backend not in _ASYNC_DRIVERS:
        raise ConfigurationError(
            f"unsupported database {backend!r}: use sqlite:///path.db or postgresql://..."
        )
    return url.set(drivername=_ASYNC_DRIVERS[backend])


MIN_SQLITE = (3, 35)
BUSY_TIMEOUT = 30.0  # seconds a SQLite writer waits for another process's transaction


_SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON")


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling is off, so that we can say BEGIN IMMEDIATE
    # for writes: a deferred transaction that later writes can fail with SQLITE_BUSY
    # instead of waiting for the lock.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (*_SQLITE_PRAGMAS, f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}"):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())


def _require_wal(journal: Any, url: URL) -> None:
    if [tuple(row) for row in journal] != [("wal",)]:
        raise ConfigurationError(
            f"SQLite could not put {url.database} in WAL mode"
            " (a read-only file, or a file system without shared memory)"
        )


@dataclass(frozen=True)
class PoolOptions:
    """A PostgreSQL process's connections (``BELLHOOK_DB_*``)."""

    size: int = 5
    max_overflow: int = 10
    timeout: float = 10.0  # seconds to wait for a free connection
    connect_timeout: float = 5.0
    statement_timeout: float = 30.0  # seconds; 0: none

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolOptions:
        return cls(
            size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            timeout=settings.db_pool_timeout,
            connect_timeout=settings.db_connect_timeout,
            statement_timeout=settings.db_statement_timeout,
        )

    def engine_options(self) -> dict[str, Any]:
        server_settings = {"application_name": APPLICATION_NAME}
        if self.statement_timeout:
            # One stuck query cannot hold a worker's connection for ever.
            server_settings["statement_timeout"] = str(int(self.statement_timeout * 1000))
        return {
            "pool_size": self.size,
            "max_overflow": self.max_overflow,
            "pool_timeout": self.timeout,
            # A connection the server dropped (a restart, pg_terminate_backend) is
            # found out before use, not by the request that gets it.
            "pool_pre_ping": True,
            "connect_args": {"timeout": self.connect_timeout, "server_settings": server_settings},
        }


# How bellhook's connections show in pg_stat_activity (and how operators find them).
APPLICATION_NAME = "bellhook"

# Errors that mean the database cannot be used right now: the driver's (a dropped
# connection, a refused or timed-out connect) and the pool's (no free connection).
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (DBAPIError, OSError, PoolTimeout, TimeoutError)


class Database:
    """Owns the engine. Open it in a lifespan, close it at shutdown."""

    def __init__(
        self,
        database_url: str,
        *,
        echo: bool = False,
        checkpoint_after: float = CHECKPOINT_AFTER,
        pool: PoolOptions | None = None,
    ) -> None:
        self.url = async_url(database_url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite and sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigurationError(
                f"bellhook needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer (for"
                f" UPDATE ... RETURNING); this Python has {sqlite3.sqlite_version}"
            )
        if self.is_sqlite and (
            self.url.database in (None, "", ":memory:") or self.url.query.get("mode") == "memory"
        ):
            raise ConfigurationError(
                "an in-memory SQLite database is private to one connection and lost at"
                " exit; give bellhook a file: sqlite:///bellhook.db"
            )
        # hide_parameters: SQL errors must not carry values (secrets) into logs.
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        self.pool = pool or PoolOptions()
        if not self.is_sqlite:
            kwargs.update(self.pool.engine_options())
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        # How direct() transactions store values; usable before one begins.
        self.values: type[Direct] = SqliteDirect if self.is_sqlite else PostgresDirect
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(self.engine.sync_engine, "begin", _sqlite_on_begin)
        # SQLite has one writer at a time. Writers of this process queue here, in order,
        # instead of in SQLite's busy handler, which sleeps and retries (tens of ms each
        # time under contention). Against other processes, write() still meets the busy
        # handler; direct() waits in begin_immediate.
        self._write_turn = asyncio.Lock() if self.is_sqlite else contextlib.nullcontext()
        # SQLite: direct()'s own connection, outside SQLAlchemy's pool (opened on first
        # use, under the write turn), called on the loop's thread (see store.direct). A
        # pooled one cost three more trips to the driver's thread per transaction (the
        # busy timeout off and on again, the pool's rollback on return), and
        # SQLAlchemy's connection and greenlet around each.
        self._queue_connection: sqlite3.Connection | None = None
        self._opening: asyncio.Future[sqlite3.Connection] | None = None
        # Copies the log that the queue connection writes, on a connection of its own:
        # the queue connection checkpoints only as a backstop (see store.wal).
        self.checkpointer = (
            WalCheckpointer(self._open_checkpoints, self._write_turn, after=checkpoint_after)
            if self.is_sqlite
            else None
        )
        # What direct() translates, looked up once rather than per transaction.
        self._driver_conflicts = driver_conflicts(sqlite=self.is_sqlite)
        self._driver_errors = driver_errors(sqlite=self.is_sqlite)
        # Wakes other processes' workers after commits that left work due (PostgreSQL).
        self.notifier = None if self.is_sqlite else WorkNotifier(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that will write: committed on success, rolled back on error."""
        try:
            async with self._write_turn, self.engine.connect() as conn:
                if self.is_sqlite:
                    await conn.execution_options(sqlite_begin="IMMEDIATE")
                async with conn.begin():
                    yield conn
        except IntegrityError:
            raise  # a conflict, for the caller to handle; not an outage
        except OUTAGE_ERRORS as exc:
            raise StorageUnavailable("the database is unavailable, try again shortly") from exc

    @asynccontextmanager
    async def direct(self, *, durable: bool = True) -> AsyncIterator[Direct]:
        """A write transaction on the driver's own connection (see ``store.direct``):
        committed on success, rolled back on error.

        ``durable=False``: on PostgreSQL, the commit returns before its log is flushed
        (``synchronous_commit off``), for writes whose loss in a server crash is
        harmless: a lease lost that way makes its deliveries due again, and they are
        sent again, as after any crash (at-least-once). One flush less on the path of
        every first attempt."""
        try:
            if self.is_sqlite:
                async with self._write_turn:
                    queue = await self._sqlite_queue_connection()
                    try:
                        await begin_immediate(queue, wait_up_to=BUSY_TIMEOUT)
                        changes = queue.total_changes
                        tx = SqliteDirect(queue)
                        yield tx
                        wrote = queue.total_changes != changes
                        if tx.heavy or (wrote and self._log_restarts()):
                            await in_thread(queue.execute, "COMMIT")
                        else:
                            queue.execute("COMMIT")
                    except BaseException:
                        # The block's own error (or cancellation) is the one to report.
                        try:
                            if queue.in_transaction:
                                queue.execute("ROLLBACK")
                        except BaseException as failed:
                            # Left in an unknown state: the next transaction opens anew.
                            await self._close_queue_connection()
                            if isinstance(failed, asyncio.CancelledError):
                                raise  # a cancellation is never swallowed
                        raise
                    # Only a commit that wrote has pages for the log: an idle worker's
                    # empty claims do not wake the checkpointer.
                    if wrote and self.checkpointer is not None:
                        self.checkpointer.written()
            else:
                async with self.engine.connect() as conn:
                    driver = (await conn.get_raw_connection()).driver_connection
                    assert driver is not None  # a live connection from the pool
                    pg_tx = PostgresDirect(driver)
                    async with driver.transaction():
                        if not durable:
                            await driver.execute("SET LOCAL synchronous_commit TO off")
                        yield pg_tx
                    if pg_tx.work_due and self.notifier is not None:
                        self.notifier.due()  # committed: now, and not before (notifier)
        except self._driver_conflicts as exc:
            # A conflict, for the caller to handle, as from write().
            raise IntegrityError("a driver-level statement", None, exc) from exc
        except self._driver_errors as exc:
            raise StorageUnavailable("the database is unavailable, try again shortly") from exc

    def _log_restarts(self) -> bool:
        """Whether this commit starts the log over (and syncs its header): the first
        one that writes after a checkpoint copied all of it."""
        checkpointer = self.checkpointer
        if checkpointer is None or not checkpointer.log_copied:
            return False
        checkpointer.log_copied = False
        return True

    async def _sqlite_queue_connection(self) -> sqlite3.Connection:
        if self._queue_connection is None:
            # Opened in a thread: opening may wait for another process's lock (SQLite's
            # busy handler, for the journal mode). Used on the loop's thread from then
            # on. Shielded: a caller cancelled meanwhile leaves it to the next one (or
            # to close()), rather than to the garbage collector.
            if self._opening is None:
                self._opening = asyncio.ensure_future(asyncio.to_thread(self._connect_queue))
            # Under the write turn: no other caller, nor close(), runs meanwhile.
            try:
                self._queue_connection = await asyncio.shield(self._opening)
            finally:
                if self._opening.done():  # opened, or failed: the next call starts anew
                    self._opening = None
        return self._queue_connection

    def _connect_queue(self) -> sqlite3.Connection:
        # No busy timeout: begin_immediate waits for other processes itself. That holds
        # in WAL mode only, where a transaction that began never waits. The checkpointer
        # copies the log in the background; this connection's own checkpoints are a
        # backstop, should it fail (store.wal).
        args, options = self.engine.dialect.create_connect_args(self.url)
        # The URL's options (uri, timeout...), as SQLAlchemy opens the pool's; and
        # usable on the loop's thread, though opened in another.
        options = {**options, "isolation_level": None, "check_same_thread": False}
        (database,) = args
        connection: sqlite3.Connection = sqlite3.connect(database, **options)
        try:
            for pragma in (
                *_SQLITE_PRAGMAS,
                "PRAGMA busy_timeout=0",
                f"PRAGMA wal_autocheckpoint={QUEUE_BACKSTOP_PAGES}",
            ):
                connection.execute(pragma)
            _require_wal(connection.execute("PRAGMA journal_mode").fetchall(), self.url)
        except BaseException:
            connection.close()
            raise
        return connection

    async def _open_checkpoints(self) -> aiosqlite.Connection:
        # No busy timeout: a RESTART checkpoint that would wait does what it can instead.
        return await self._open_sqlite("PRAGMA busy_timeout=0")

    async def _open_sqlite(self, *pragmas: str) -> aiosqlite.Connection:
        """A driver connection outside SQLAlchemy's pool, in WAL mode."""
        import aiosqlite  # with SQLite only, as SQLAlchemy's dialect does

        # Opened as SQLAlchemy opens the pool's (the URL's query: uri, timeout...).
        args, options = self.engine.dialect.create_connect_args(self.url)
        connection = await aiosqlite.connect(*args, **{**options, "isolation_level": None})
        try:
            for pragma in (*_SQLITE_PRAGMAS, *pragmas):
                await connection.execute(pragma)
            _require_wal(await connection.execute_fetchall("PRAGMA journal_mode"), self.url)
        except BaseException:
            await connection.close()
            raise
        return connection

    async def _close_queue_connection(self) -> None:
        opening, self._opening = self._opening, None
        if opening is not None:  # its caller was cancelled: nobody else will close it
            await asyncio.wait({opening})
            if not opening.cancelled() and opening.exception() is None:
                opening.result().close()
        connection, self._queue_connection = self._queue_connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a consistent snapshot)."""
        try:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
        except IntegrityError:
            raise  # a conflict, for the caller to handle; not an outage
        except OUTAGE_ERRORS as exc:
            raise StorageUnavailable("the database is unavailable, try again shortly") from exc

    def work_due(self) -> None:
        """Wake the dispatchers of every process (call after the commit that made the
        work; ``store.notifier``); nothing on SQLite, whose processes poll."""
        if self.notifier is not None:
            self.notifier.due()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except OUTAGE_ERRORS:
            return False
        return True

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (safe with many processes)."""
        from bellhook.store.migrate import upgrade_connection

        async with self.write() as conn:
            if self.dialect == "postgresql":
                # A migration may build an index on a large table, and a process may
                # wait for another's: neither is bounded by BELLHOOK_DB_STATEMENT_TIMEOUT.
                await conn.execute(text("SET LOCAL statement_timeout = 0"))
                # One migrator at a time across processes; released at commit.
                await conn.execute(text("SELECT pg_advisory_xact_lock(72217301)"))
            await conn.run_sync(upgrade_connection)

    async def schema_state(self) -> str:
        """``ok``, or which migrations the schema lacks (``store.migrate.schema_state``)."""
        from bellhook.store.migrate import schema_state

        async with self.read() as conn:
            return await conn.run_sync(schema_state)

    async def close(self) -> None:
        async with self._write_turn:  # never under a transaction, nor an opening
            await self._close_queue_connection()
        if self.checkpointer is not None:
            await self.checkpointer.close()
        if self.notifier is not None:
            await self.notifier.close()
        await self.engine.dispose()
