"""Driver-level statements for the queue's hot path: the queue's writes and ingest.

The dispatcher claims and records thousands of deliveries a second. Through
SQLAlchemy's asyncio adapters each statement costs several trips to the driver
(on SQLite, aiosqlite's thread: a cursor, the statement, the rows, the close), and
parameter and result processing in Python; together that was more than the HTTP
request itself. Here the same transaction runs on the driver's own connection:
asyncpg's ``fetch`` / ``executemany`` (one round trip each) on PostgreSQL.

On SQLite, the queue's connection is the standard library's, called on the event
loop's thread. A trip to aiosqlite's thread and back cost 47 µs of CPU and 60-85 µs
of waiting (two thread wake-ups; measured on the bench's 2-core VM) for statements
that take 1-50 µs, six of them per ingested event. Without it, in alternated runs of
the bench, worker throughput rose 10-35% and the isolation scenario's p99 fell by half
or more (``docs/benchmarks.md``). What could wait or take long does not hold the loop:
- another process's write lock: the connection has no busy timeout, and
  ``begin_immediate`` retries asynchronously (a WAL write transaction that began never
  waits for a lock);
- statements of ``THREAD_AT`` rows or parameters or more (a batch fanned out to five
  webhooks or more), and the commit after them, run in a thread;
- so does the commit that starts the log over after a checkpoint, which syncs the log's
  header (``synchronous=NORMAL`` syncs nothing else at commit); checkpoints themselves
  run on the checkpointer's own connection and thread (``store.wal``).
Smaller statements hold the loop for what they take: a claim of a few dozen
deliveries about a millisecond, the largest claims (256 deliveries, across dozens of
webhooks) and flushes (500 outcomes) 5-20 ms, a batch of 1,000 events to one webhook
about 30 ms. One exception: should the checkpointer fall behind or fail, the
connection's backstop checkpoint (every 10,000 pages of log) runs in a commit on the
loop, about 100 ms for 40 MB.

Everything else in the store stays on SQLAlchemy Core; the schema is still Alembic's.

Statements are written once, with ``?`` placeholders (numbered ``$n`` for asyncpg),
and values go in and come out as the driver has them: ``when()`` and ``datetime_of()``
convert datetimes the way SQLAlchemy's ``UTCDateTime`` stores them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bellhook.domain.timefmt import iso_utc
from bellhook.store.tables import aware

Row = Sequence[Any]
T = TypeVar("T")


@dataclass(frozen=True)
class RowsStatement:
    """One statement applied to many rows, in each database's cheapest form.

    ``each`` takes one row's values (``?`` placeholders), run once per row: SQLite's
    executemany steps a prepared statement, as cheap as it gets there. ``columns`` takes
    one array per column (``unnest``) and runs once for all rows: on PostgreSQL,
    asyncpg's executemany pipelines the rows but the server still runs each as a
    statement of its own. For the lease, the attempt and the outcome, one statement
    each took a quarter off the server's CPU per delivery (docs/benchmarks.md). Rows
    must not repeat a key an UPDATE matches on: as one statement, a row is updated
    once whatever the number of matching input rows.
    """

    each: str
    columns: str


# PostgreSQL's notification channel for due work (store.wakeups).
WORK_CHANNEL = "bellhook_work"
NOTIFY_SQL = f"NOTIFY {WORK_CHANNEL}"


class Direct:
    """The statements of one transaction, on the driver's connection."""

    work_due = False  # set by wake_workers(); Database.direct() notifies after commit

    def wake_workers(self) -> None:
        """Wake the dispatchers of every process once this transaction commits
        (``store.notifier``). SQLite has no notifications: its processes poll."""
        self.work_due = True

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def execute_rows(self, statement: RowsStatement, rows: Sequence[Sequence[Any]]) -> None:
        """``statement`` for each of ``rows`` (see ``RowsStatement``)."""
        await self.execute_many(statement.each, rows)

    # Conversions need no connection: callers may prepare rows before the transaction.
    @staticmethod
    def when(value: datetime | None) -> Any:
        """A timestamp as the database stores it."""
        raise NotImplementedError

    @staticmethod
    def datetime_of(value: Any) -> datetime | None:
        """A stored timestamp as an aware UTC datetime."""
        raise NotImplementedError

    @classmethod
    def iso_of(cls, value: Any) -> str:
        """A stored (non-null) timestamp as payloads write it (``domain.timefmt.iso_utc``)."""
        stamp = cls.datetime_of(value)
        assert stamp is not None
        return iso_utc(stamp)


# Statements with at least this many rows (or parameters) run in a thread: a batch
# of events fanned out to many webhooks would hold the event loop for a tenth of a
# second or more. Not smaller ones: a thread binds each row's parameters under the GIL,
# and waits for it while the loop is busy (alternated runs): with 128, flushes and
# leases went to the thread and ten webhooks' drains ran 20-40% slower; with 1,000,
# batch ingest (1,000 events a call) ran at 20,000-28,000 events/s instead of 32,000.
THREAD_AT = 5000


class SqliteDirect(Direct):
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection  # the queue's own, used on the event loop's thread
        self.heavy = False  # a statement went to a thread: the commit goes too

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        if len(params) >= THREAD_AT:
            self.heavy = True
            return await in_thread(_fetch_all, self._conn, sql, params)
        return self._conn.execute(sql, params).fetchall()

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if len(rows) >= THREAD_AT:
            self.heavy = True
            await in_thread(self._conn.executemany, sql, rows)
        elif rows:
            self._conn.executemany(sql, rows)

    @staticmethod
    def when(value: datetime | None) -> str | None:
        # SQLAlchemy's storage format for DateTime on SQLite ("2026-01-02 03:04:05.000006"):
        # fixed width, so that the text compares in time order, and equal to what rows
        # written through SQLAlchemy hold. isoformat is many times faster than strftime.
        if value is None:
            return None
        return aware(value).astimezone(UTC).isoformat(" ", "microseconds")[:26]

    @staticmethod
    def datetime_of(value: Any) -> datetime | None:
        if value is None:
            return None
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    @classmethod
    def iso_of(cls, value: Any) -> str:
        # Every claimed delivery's event timestamp: the stored text cut to milliseconds
        # (truncated, as isoformat does) is 10 times cheaper than parsing and formatting.
        if len(value) == 26 and value[10] == " ":
            return f"{value[:10]}T{value[11:23]}Z"
        return super().iso_of(value)


def _fetch_all(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Row]:
    return connection.execute(sql, params).fetchall()


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` on the queue's connection, in a thread. A caller cancelled
    meanwhile still waits for it to end: the connection's next statement (the
    rollback) must not run beside it."""
    task = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


class PostgresDirect(Direct):
    _numbered: dict[str, str] = {}  # a cache of pure rewrites, shared

    def __init__(self, connection: Any) -> None:
        self._conn = connection  # an asyncpg.Connection

    @classmethod
    def numbered(cls, sql: str) -> str:
        """``?`` placeholders as asyncpg's ``$1, $2, ...`` (our statements hold no other ``?``)."""
        done = cls._numbered.get(sql)
        if done is None:
            parts = sql.split("?")
            done = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
            cls._numbered[sql] = done
        return done

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self._conn.fetch(self.numbered(sql), *params))

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._conn.executemany(self.numbered(sql), rows)

    async def execute_rows(self, statement: RowsStatement, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._conn.execute(
                self.numbered(statement.columns), *(list(c) for c in zip(*rows, strict=True))
            )

    @staticmethod
    def when(value: datetime | None) -> datetime | None:
        return None if value is None else aware(value)

    @staticmethod
    def datetime_of(value: Any) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.astimezone(UTC)


async def begin_immediate(connection: sqlite3.Connection, *, wait_up_to: float) -> None:
    """``BEGIN IMMEDIATE`` on a SQLite connection whose busy timeout is 0, waiting for
    another process's write transaction in short asynchronous steps.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15... ms between tries (and would
    block the event loop meanwhile). Two worker processes on one file then spent most
    of their time asleep: ``worker --processes 2`` was slower than one process. Here
    the first tries come 0.2 ms apart, the event loop runs meanwhile, and the wait is bounded by
    ``wait_up_to`` seconds. Only the start of a write transaction can be refused in WAL
    mode: once it holds the write lock, its statements and its commit never wait for
    other processes.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + wait_up_to
    delay = 0.0002
    while True:
        try:
            connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or loop.time() >= give_up_at:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.004)


def marks(n: int) -> str:
    """``n`` placeholders, comma-separated: ``IN (?, ?, ?)``."""
    return ", ".join("?" * n)


def driver_conflicts(*, sqlite: bool) -> tuple[type[BaseException], ...]:
    """What the driver raises when a statement breaks a constraint (a duplicate key)."""
    if sqlite:
        return (sqlite3.IntegrityError,)
    import asyncpg  # type: ignore[import-untyped]  # only with PostgreSQL

    return (asyncpg.IntegrityConstraintViolationError,)


def driver_errors(*, sqlite: bool) -> tuple[type[BaseException], ...]:
    """What the driver raises when the database is away or refuses a statement."""
    # The pool's timeout (no free connection) and a connect that timed out, too.
    common = (DBAPIError, OSError, PoolTimeout, TimeoutError)
    if sqlite:
        return (sqlite3.Error, *common)
    import asyncpg  # only with PostgreSQL

    return (asyncpg.PostgresError, asyncpg.InterfaceError, *common)
