"""A webhook's recent health from its attempts: how many, how many succeeded, latency
percentiles and the last failure, over a window ending now (``GET .../stats``).

Every figure is read on the ``(webhook_id, started_at)`` index, within the window: the
cost follows the webhook's own recent attempts, not the table (on PostgreSQL the index
also holds latency, status and error kind, so that the rows need not be read). The
percentiles are nearest-rank (one of the stored latencies, never an interpolation):
``percentile_disc`` on PostgreSQL, ``ORDER BY ... LIMIT 1 OFFSET k`` on SQLite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, func, not_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bellhook.domain.models import ErrorKind
from bellhook.store.database import Database
from bellhook.store.tables import attempts

# A last error's message is cut here (the sender's own messages are at most 300).
MESSAGE_CHARS = 300
PERCENTILES = (50, 99)

# What AttemptResult.succeeded means, in SQL: a 2xx answer and no error. COALESCE keeps
# it true or false (never NULL), so that NOT of it is exactly the failures.
SUCCEEDED = and_(
    attempts.c.error_kind.is_(None), func.coalesce(attempts.c.status_code, 0).between(200, 299)
)


@dataclass(frozen=True, slots=True)
class LastError:
    """The newest failed attempt of a window (never its response body)."""

    started_at: datetime
    status_code: int | None
    error_kind: ErrorKind | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Attempts (automatic and manual alike) started in ``[since, until)``."""

    since: datetime
    until: datetime
    attempts: int
    succeeded: int
    latency_ms: Mapping[int, float | None]  # percentile -> nearest-rank latency
    last_error: LastError | None

    @property
    def failed(self) -> int:
        return self.attempts - self.succeeded

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.attempts if self.attempts else None


def nearest_rank_offset(percentile: int, count: int) -> int:
    """The 0-based position of the ``percentile``-th nearest-rank value among ``count``
    sorted values: ceil(p/100 * n) - 1, in integers (no float rounding at the edges)."""
    if count < 1:
        raise ValueError("no values")
    return max(0, -(-percentile * count // 100) - 1)


def in_window(webhook_id: str, since: datetime, until: datetime) -> ColumnElement[bool]:
    return and_(
        attempts.c.webhook_id == webhook_id,
        attempts.c.started_at >= since,
        attempts.c.started_at < until,
    )


def _truncated(message: str | None) -> str | None:
    if message is None or len(message) <= MESSAGE_CHARS:
        return message
    return message[: MESSAGE_CHARS - 1] + "\u2026"


async def window_stats(
    conn: AsyncConnection, webhook_id: str, *, now: datetime, span: timedelta
) -> WindowStats:
    """The stats of ``webhook_id``'s attempts started in ``[now - span, now)``."""
    since = now - span
    where = in_window(webhook_id, since, now)
    counts = (
        await conn.execute(select(func.count(), func.count(case((SUCCEEDED, 1)))).where(where))
    ).one()
    total, succeeded = int(counts[0]), int(counts[1])
    latency: dict[int, float | None] = dict.fromkeys(PERCENTILES)
    last_error = None
    if total and conn.dialect.name == "postgresql":
        # One pass for both: percentile_disc is the nearest rank, as below.
        query = select(
            *(
                func.percentile_disc(p / 100).within_group(attempts.c.latency_ms)
                for p in PERCENTILES
            )
        ).where(where)
        found = (await conn.execute(query)).one()
        latency = {p: float(v) for p, v in zip(PERCENTILES, found, strict=True)}
    elif total:
        for p in PERCENTILES:
            query = (
                select(attempts.c.latency_ms)
                .where(where)
                .order_by(attempts.c.latency_ms)
                .limit(1)
                .offset(nearest_rank_offset(p, total))
            )
            latency[p] = float((await conn.execute(query)).scalar_one())
    if total > succeeded:
        # Only the start of the message leaves the database: it may be long.
        row = (
            await conn.execute(
                select(
                    attempts.c.started_at,
                    attempts.c.status_code,
                    attempts.c.error_kind,
                    func.substr(attempts.c.error_message, 1, MESSAGE_CHARS + 1),
                )
                .where(where, not_(SUCCEEDED))
                .order_by(attempts.c.started_at.desc(), attempts.c.id.desc())
                .limit(1)
            )
        ).one()
        last_error = LastError(
            started_at=row[0],
            status_code=row[1],
            error_kind=ErrorKind(row[2]) if row[2] else None,
            error_message=_truncated(row[3]),
        )
    return WindowStats(
        since=since,
        until=now,
        attempts=total,
        succeeded=succeeded,
        latency_ms=latency,
        last_error=last_error,
    )


async def webhook_stats(
    db: Database, webhook_id: str, *, now: datetime, spans: Mapping[str, timedelta]
) -> dict[str, WindowStats]:
    """Each named window's stats, all from one snapshot (they agree with each other)."""
    async with db.read() as conn:
        return {
            name: await window_stats(conn, webhook_id, now=now, span=span)
            for name, span in spans.items()
        }
