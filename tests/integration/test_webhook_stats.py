"""A webhook's stats from its attempts, on a real database (SQLite, or the PostgreSQL of
BELLHOOK_TEST_DATABASE_URL): exact counts, nearest-rank percentiles, window edges, the
last failure, and the index the reads use."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection

from bellhook.config import Settings
from bellhook.domain.ids import new_id
from bellhook.domain.models import ErrorKind
from bellhook.runtime import Runtime, open_runtime
from bellhook.store.migrate import alembic_config
from bellhook.store.stats import (
    MESSAGE_CHARS,
    LastError,
    WindowStats,
    in_window,
    nearest_rank_offset,
    webhook_stats,
)
from bellhook.store.tables import attempts

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SPANS = {"hour": HOUR, "day": DAY}
SERVER_ERROR = {"status_code": 500, "error_kind": "http_status"}
TIMEOUT = {"status_code": None, "error_kind": "timeout", "error_message": "no answer in 10 s"}


@pytest.fixture
async def rt(make_settings: Callable[..., Settings]) -> AsyncIterator[Runtime]:
    async with open_runtime(make_settings()) as runtime:
        yield runtime


def attempt(
    webhook_id: str, started_at: datetime, latency_ms: float, **fields: Any
) -> dict[str, Any]:
    """An attempts row: a 200 unless ``fields`` say otherwise."""
    row: dict[str, Any] = {
        "id": new_id("att"),
        "delivery_id": new_id("dlv"),
        "webhook_id": webhook_id,
        "number": 1,
        "manual": False,
        "started_at": started_at,
        "status_code": 200,
        "latency_ms": latency_ms,
        "error_kind": None,
        "error_message": None,
        "response_excerpt": "the body, never in stats",
    }
    row.update(fields)
    return row


async def insert(rt: Runtime, rows: Sequence[dict[str, Any]]) -> None:
    rows = list(rows)
    random.Random(7).shuffle(rows)  # stored order is neither time nor latency order
    async with rt.db.write() as conn:
        await conn.execute(attempts.insert(), rows)


async def stats(rt: Runtime, webhook_id: str, now: datetime = NOW) -> dict[str, WindowStats]:
    return await webhook_stats(rt.db, webhook_id, now=now, spans=SPANS)


def summary(w: WindowStats) -> tuple[Any, ...]:
    return (w.attempts, w.succeeded, w.failed, w.success_rate, w.latency_ms[50], w.latency_ms[99])


async def test_each_window_counts_its_own_attempts_with_nearest_rank_percentiles(
    rt: Runtime,
) -> None:
    hook, other = new_id("wh"), new_id("wh")
    rows = []
    # The last hour: latencies 1..100 ms, the oldest exactly an hour ago (inside: the
    # window is [now - 1 h, now)). Every tenth answered 500 and the fifth timed out;
    # every third was a manual retry, counted alike.
    for i in range(1, 101):
        failure = TIMEOUT if i == 5 else SERVER_ERROR if i % 10 == 0 else {}
        at = NOW - timedelta(seconds=36 * i)
        rows.append(attempt(hook, at, float(i), manual=i % 3 == 0, **failure))
    # Older than the hour, in the day only: latencies 101..200 ms, the oldest exactly a
    # day ago; one 503.
    for j in range(1, 101):
        failure = {"status_code": 503, "error_kind": "http_status"} if j == 50 else {}
        at = NOW - HOUR - timedelta(seconds=828 * j)
        rows.append(attempt(hook, at, 100.0 + j, **failure))
    # In no window: at now itself, a microsecond before the day, days before.
    for at in (NOW, NOW - DAY - timedelta(microseconds=1), NOW - 3 * DAY):
        rows.append(attempt(hook, at, 9999.0, **SERVER_ERROR))
    # Another webhook's attempts, slow, failing and newer than any of hook's.
    for k in range(50):
        rows.append(attempt(other, NOW - timedelta(seconds=1 + k), 10_000.0, **SERVER_ERROR))
    await insert(rt, rows)

    windows = await stats(rt, hook)
    assert set(windows) == {"hour", "day"}
    hour, day = windows["hour"], windows["day"]
    assert summary(hour) == (100, 89, 11, 0.89, 50.0, 99.0)
    assert summary(day) == (200, 188, 12, 0.94, 100.0, 198.0)
    newest_failure = LastError(
        started_at=NOW - timedelta(seconds=180),
        status_code=None,
        error_kind=ErrorKind.TIMEOUT,
        error_message="no answer in 10 s",
    )
    assert hour.last_error == newest_failure
    assert day.last_error == newest_failure
    assert (hour.since, hour.until, day.since, day.until) == (NOW - HOUR, NOW, NOW - DAY, NOW)

    theirs = (await stats(rt, other))["hour"]
    assert summary(theirs) == (50, 0, 50, 0.0, 10_000.0, 10_000.0)
    assert theirs.last_error is not None
    assert theirs.last_error.started_at == NOW - timedelta(seconds=1)


async def test_a_window_without_attempts_has_no_rate_latency_or_error(rt: Runtime) -> None:
    hook = new_id("wh")
    await insert(rt, [attempt(hook, NOW - 2 * HOUR, 40.0, **SERVER_ERROR)])
    windows = await stats(rt, hook)
    assert summary(windows["hour"]) == (0, 0, 0, None, None, None)
    assert windows["hour"].last_error is None
    assert summary(windows["day"]) == (1, 0, 1, 0.0, 40.0, 40.0)
    assert windows["day"].last_error is not None
    assert windows["day"].last_error.status_code == 500
    unknown = await stats(rt, new_id("wh"))
    assert [summary(w) for w in unknown.values()] == [(0, 0, 0, None, None, None)] * 2


@pytest.mark.parametrize(
    ("latencies", "p50", "p99"),
    [
        ([12.5], 12.5, 12.5),
        ([20.0, 10.0], 10.0, 20.0),
        ([30.0, 10.0, 20.0], 20.0, 30.0),
        ([3.0, 3.0, 1.0, 2.0], 2.0, 3.0),
        ([float(v) for v in range(1, 201)], 100.0, 198.0),
        ([float(v) for v in range(1, 1001)], 500.0, 990.0),
    ],
)
async def test_percentiles_are_nearest_rank_on_every_database(
    rt: Runtime, latencies: list[float], p50: float, p99: float
) -> None:
    hook = new_id("wh")
    at = [NOW - timedelta(seconds=1 + i) for i in range(len(latencies))]
    await insert(rt, [attempt(hook, t, ms) for t, ms in zip(at, latencies, strict=True)])
    hour = (await stats(rt, hook))["hour"]
    assert (hour.latency_ms[50], hour.latency_ms[99]) == (p50, p99)
    assert (hour.success_rate, hour.last_error) == (1.0, None)


def test_the_nearest_rank_offset_is_ceil_p_n_over_100_minus_one() -> None:
    cases = [(50, 1, 0), (99, 1, 0), (50, 2, 0), (99, 2, 1), (50, 100, 49), (99, 100, 98)]
    assert [nearest_rank_offset(p, n) for p, n, _ in cases] == [k for _, _, k in cases]
    assert [nearest_rank_offset(99, n) for n in (101, 199, 200)] == [99, 197, 197]
    with pytest.raises(ValueError):
        nearest_rank_offset(50, 0)


async def test_the_last_error_is_the_newest_failure_with_a_truncated_message(
    rt: Runtime,
) -> None:
    hook = new_id("wh")
    long = "x" * (MESSAGE_CHARS * 10)
    await insert(
        rt,
        [
            attempt(hook, NOW - timedelta(minutes=30), 5.0, **SERVER_ERROR, error_message="old"),
            # A 200 whose body was too large is a failure, though its status is 2xx.
            attempt(
                hook,
                NOW - timedelta(minutes=20),
                6.0,
                status_code=200,
                error_kind="too_large",
                error_message=long,
            ),
            attempt(hook, NOW - timedelta(minutes=10), 7.0),  # newer, but a success
        ],
    )
    hour = (await stats(rt, hook))["hour"]
    assert (hour.attempts, hour.succeeded, hour.failed) == (3, 1, 2)
    assert hour.last_error is not None
    assert hour.last_error.started_at == NOW - timedelta(minutes=20)
    assert (hour.last_error.status_code, hour.last_error.error_kind) == (200, ErrorKind.TOO_LARGE)
    message = hour.last_error.error_message
    assert message is not None and len(message) == MESSAGE_CHARS
    assert message == "x" * (MESSAGE_CHARS - 1) + "\u2026"

    exact = new_id("wh")
    whole = "y" * MESSAGE_CHARS  # at the limit: kept as it is
    await insert(rt, [attempt(exact, NOW - HOUR, 1.0, **SERVER_ERROR, error_message=whole)])
    last = (await stats(rt, exact))["hour"].last_error
    assert last is not None and last.error_message == whole


def _attempt_indexes(connection: Connection) -> set[str]:
    return {str(ix["name"]) for ix in sa.inspect(connection).get_indexes("attempts")}


def _downgrade_to_0003(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0003")


async def test_a_database_at_0003_gains_the_webhook_index(rt: Runtime) -> None:
    async with rt.db.write() as conn:
        await conn.run_sync(_downgrade_to_0003)
    async with rt.db.read() as conn:
        assert "ix_attempts_webhook_started" not in await conn.run_sync(_attempt_indexes)
    await rt.db.migrate()
    async with rt.db.read() as conn:
        assert "ix_attempts_webhook_started" in await conn.run_sync(_attempt_indexes)


async def test_a_window_is_read_on_the_webhook_index(rt: Runtime) -> None:
    # Many webhooks' attempts in the window: scanning by time alone would read them all.
    hooks = [new_id("wh") for _ in range(20)]
    await insert(
        rt,
        [attempt(h, NOW - timedelta(seconds=i + 1), 1.0) for h in hooks for i in range(50)],
    )
    query = sa.select(sa.func.count()).where(in_window(hooks[0], NOW - HOUR, NOW))
    async with rt.db.write() as conn:
        sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if rt.db.dialect == "sqlite":
            plan = (await conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql))).all()
        else:
            await conn.execute(sa.text("ANALYZE attempts"))
            await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            plan = (await conn.execute(sa.text("EXPLAIN " + sql))).all()
    assert "ix_attempts_webhook_started" in " ".join(str(cell) for row in plan for cell in row)
