"""Schema migrations on a real database, and the claim's use of the index they make."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection

from bellhook.config import Settings
from bellhook.runtime import open_runtime
from bellhook.store.database import Database
from bellhook.store.direct import PostgresDirect
from bellhook.store.events import NewEvent
from bellhook.store.migrate import alembic_config
from tests.support import admin_webhook

LEASE = timedelta(seconds=30)


def _downgrade_to_0001(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0001")


def _delivery_indexes(connection: Connection) -> set[str]:
    return {str(ix["name"]) for ix in sa.inspect(connection).get_indexes("deliveries")}


async def delivery_indexes(db: Database) -> set[str]:
    async with db.read() as conn:
        return await conn.run_sync(_delivery_indexes)


async def test_a_database_at_0001_upgrades_to_the_pending_index_with_its_queue(
    make_settings: Callable[..., Settings],
) -> None:
    now = datetime.now(UTC)
    async with open_runtime(make_settings()) as rt:
        await admin_webhook(rt, now)
        await rt.events.ingest(
            [NewEvent(f"e{i}", "post.created", "{}", now, None) for i in range(3)], now=now
        )
        # One delivery ends; two stay pending.
        done = await rt.deliveries.claim(now=now, limit=1, lease=LEASE, in_flight={}, per_webhook=1)
        ended = "UPDATE deliveries SET status = 'succeeded', next_attempt_at = NULL WHERE id = :id"
        async with rt.db.write() as conn:
            await conn.execute(sa.text(ended), {"id": done[0].delivery_id})

        async with rt.db.write() as conn:
            await conn.run_sync(_downgrade_to_0001)
        before = await delivery_indexes(rt.db)
        assert "ix_deliveries_due" in before and "ix_deliveries_pending" not in before

        await rt.db.migrate()
        indexes = await delivery_indexes(rt.db)
        assert "ix_deliveries_pending" in indexes and "ix_deliveries_due" not in indexes
        claimed = await rt.deliveries.claim(
            now=now, limit=10, lease=LEASE, in_flight={}, per_webhook=10
        )
        assert len(claimed) == 2 and done[0].delivery_id not in {j.delivery_id for j in claimed}


async def test_the_claim_seeks_the_pending_deliveries_index(
    make_settings: Callable[..., Settings],
) -> None:
    # As the queue prepares it: a plan that must hold for any parameter (PostgreSQL's
    # generic plan; asyncpg prepares every statement).
    async with open_runtime(make_settings()) as rt:
        sql = rt.deliveries._due_sql(1)
        async with rt.db.direct() as tx:
            if rt.db.dialect == "sqlite":
                plan = await tx.fetch("EXPLAIN QUERY PLAN " + sql, ("wh_x", "2026", 16))
            else:
                for setting in ("enable_seqscan = off", "plan_cache_mode = force_generic_plan"):
                    await tx.fetch(f"SET LOCAL {setting}")
                await tx.fetch("PREPARE due AS " + PostgresDirect.numbered(sql))
                plan = await tx.fetch("EXPLAIN EXECUTE due('wh_x', now(), 16)")
                await tx.fetch("DEALLOCATE due")
    assert "ix_deliveries_pending" in " ".join(str(cell) for row in plan for cell in row)


def _schema_drift(connection: Connection) -> list[Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bellhook.store.tables import metadata

    context = MigrationContext.configure(connection, opts={"compare_type": False})
    drift = compare_metadata(context, metadata)
    # SQLite reports its partial indexes' predicates differently from the model's text.
    return [d for d in drift if not (isinstance(d, tuple) and "ix_deliveries_pending" in str(d))]


async def test_the_migrations_make_the_schema_the_tables_describe(
    make_settings: Callable[..., Settings],
) -> None:
    # The dead-letter table (0003) included: a table or index missing from a migration,
    # or only in one, shows here.
    async with open_runtime(make_settings()) as rt, rt.db.read() as conn:
        drift = await conn.run_sync(_schema_drift)
    assert drift == []
