"""Growth on PostgreSQL (`make bench-growth`): claim, ingest, the backlog count and a
retention purge on an empty database, then again beside 1 million pending deliveries
and 10 million finished ones (with their events and attempts).

Not part of `make bench`: seeding takes minutes and several GB. The database is one of
the bench's fresh ones on BELLHOOK_BENCH_DATABASE_URL's server, dropped at the end.
Operations run through bellhook's own repositories, in this process; nothing is sent
(the webhooks' URLs are never connected to).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bellhook.config import Settings
from bellhook.domain.models import Principal
from bellhook.runtime import Runtime, open_runtime
from bellhook.store.events import NewEvent
from bench.config import BENCH
from bench.host import log, machine
from bench.procs import Postgres

WEBHOOKS = 10
ADMIN = Principal(key_id="key_bench", owner_id="ops", is_admin=True)
LEASE = timedelta(seconds=35)


async def timed(label: str, runs: int, step: Callable[[int], Awaitable[int]]) -> dict[str, Any]:
    """``step(i)`` ``runs`` times; each returns how many rows it handled."""
    seconds: list[float] = []
    rows = 0
    for i in range(runs):
        t0 = time.perf_counter()
        rows += await step(i)
        seconds.append(time.perf_counter() - t0)
    result = {
        "runs": runs,
        "rows": rows,
        "median_ms": statistics.median(seconds) * 1000,
        "max_ms": max(seconds) * 1000,
        "rows_per_s": rows / sum(seconds) if sum(seconds) else None,
    }
    log(f"  {label}: median {result['median_ms']:.1f} ms, {result['rows_per_s'] or 0:,.0f} rows/s")
    return result


async def measure(rt: Runtime, tag: str) -> dict[str, Any]:
    now = datetime.now(UTC)

    async def ingest(i: int) -> int:
        batch = [
            NewEvent(f"evt_{tag}_{i}_{n}", "post.created", '{"n":1}', now, None)
            for n in range(1000)
        ]
        await rt.events.ingest(batch, now=now)
        return len(batch)

    async def claim(_i: int) -> int:
        jobs = await rt.deliveries.claim(
            now=datetime.now(UTC), limit=256, lease=LEASE, in_flight={}, per_webhook=128
        )
        return len(jobs)

    async def pending(_i: int) -> int:
        await rt.deliveries.pending()
        return 1

    async def purge(_i: int) -> int:
        return await rt.deliveries.purge(before=now - timedelta(days=30), batch=500)

    return {
        "ingest_1000_events": await timed("ingest, 1,000 events x 10 webhooks", 10, ingest),
        "claim_256": await timed("claim of 256", 20, claim),
        "pending_count": await timed("backlog count", 5, pending),
        "purge_500": await timed("purge batch of 500", 10, purge),
    }


SEED_EVENTS = """
INSERT INTO events (id, type, data, timestamp, audience, created_at)
SELECT 'evt_seed_' || n, 'post.created', '{"n":1}',
       $2::timestamptz - (n % 1000) * interval '1 minute', NULL,
       $2::timestamptz - (n % 1000) * interval '1 minute'
FROM generate_series($1::bigint, $3::bigint) AS n
"""
SEED_DELIVERIES = """
INSERT INTO deliveries (id, event_id, webhook_id, event_type, status, attempt_count,
    schedule_step, next_attempt_at, last_status_code, last_error_kind, is_test,
    created_at, updated_at)
SELECT 'dlv_seed_' || n || '_' || w, 'evt_seed_' || n, hooks[w], 'post.created', $4::text,
       CASE WHEN $4::text = 'pending' THEN 0 ELSE 1 END, 0,
       CASE WHEN $4::text = 'pending' THEN $2::timestamptz - interval '1 second' END,
       CASE WHEN $4::text = 'pending' THEN NULL ELSE 200 END, NULL, false,
       $2::timestamptz - (n % 1000) * interval '1 minute',
       $2::timestamptz - (n % 1000) * interval '1 minute'
FROM generate_series($1::bigint, $3::bigint) AS n, generate_series(1, $5::int) AS w,
     (SELECT array_agg(id ORDER BY id) AS hooks FROM webhooks) AS h
"""
SEED_ATTEMPTS = """
INSERT INTO attempts (id, delivery_id, webhook_id, number, manual, started_at,
    status_code, latency_ms, error_kind, error_message, response_excerpt)
SELECT 'att_seed_' || n || '_' || w, 'dlv_seed_' || n || '_' || w, hooks[w], 1, false,
       $2::timestamptz - (n % 1000) * interval '1 minute', 200, 3.5, NULL, NULL, 'ok'
FROM generate_series($1::bigint, $3::bigint) AS n, generate_series(1, $4::int) AS w,
     (SELECT array_agg(id ORDER BY id) AS hooks FROM webhooks) AS h
"""


async def seed(
    url: str, status: str, first: int, last: int, *, age: timedelta = timedelta(0)
) -> None:
    """Events ``first``..``last`` with a delivery to each webhook (and, finished, its
    attempt), in chunks of 100,000 events; ``age``: how long ago they happened."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    started = time.monotonic()
    base = datetime.now(UTC) - age
    chunk = 100_000
    try:
        for lo in range(first, last + 1, chunk):
            hi = min(lo + chunk - 1, last)
            await conn.execute(SEED_EVENTS, lo, base, hi)
            await conn.execute(SEED_DELIVERIES, lo, base, hi, status, WEBHOOKS)
            if status != "pending":
                await conn.execute(SEED_ATTEMPTS, lo, base, hi, WEBHOOKS)
            if hi - first >= chunk:
                log(f"  {status}: events up to {hi:,} ({time.monotonic() - started:.0f} s)")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def database_bytes(url: str) -> int:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


async def run(url: str, *, finished: int, pending: int) -> dict[str, Any]:
    settings = Settings(database_url=url, dev_mode=True)
    old = 5_000  # events older than the retention, for the purge to take (each phase)
    async with open_runtime(settings) as rt:
        for i in range(WEBHOOKS):
            await rt.webhooks.create(
                ADMIN,
                url=f"https://hook{i}.example.com/h",
                events=("*",),
                description=None,
                secret="s" * 24,
                now=datetime.now(UTC),
            )
        await seed(url, "succeeded", 1, old, age=timedelta(days=40))
        log("growth: empty database")
        empty = await measure(rt, "empty")
    log(f"growth: seeding {finished:,} finished and {pending:,} pending deliveries")
    t0 = time.monotonic()
    events_finished, events_pending = finished // WEBHOOKS, pending // WEBHOOKS
    first = old + 1
    await seed(url, "succeeded", first, first + events_finished - 1)
    first += events_finished
    await seed(url, "pending", first, first + events_pending - 1)
    first += events_pending
    await seed(url, "succeeded", first, first + old - 1, age=timedelta(days=40))
    seeded = {
        "seconds": round(time.monotonic() - t0, 1),
        "database_bytes": await database_bytes(url),
    }
    async with open_runtime(settings) as rt:
        log("growth: loaded database")
        loaded = await measure(rt, "loaded")
    return {
        "finished": finished,
        "pending": pending,
        "seed": seeded,
        "empty": empty,
        "loaded": loaded,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, default=10_000_000)
    parser.add_argument("--pending", type=int, default=1_000_000)
    args = parser.parse_args()
    url = os.environ.get("BELLHOOK_BENCH_DATABASE_URL")
    if not url:
        print("bench-growth needs BELLHOOK_BENCH_DATABASE_URL (a PostgreSQL server)")
        return 2
    pg = Postgres(url)
    try:
        result = {
            "machine": machine(),
            **asyncio.run(run(pg.fresh(), finished=args.finished, pending=args.pending)),
        }
    finally:
        pg.drop_all()
    out = BENCH / "results" / "growth.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    for name in result["empty"]:
        e, g = result["empty"][name], result["loaded"][name]
        print(f"{name}: median {e['median_ms']:.1f} ms empty, {g['median_ms']:.1f} ms loaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
