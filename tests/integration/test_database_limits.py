"""PostgreSQL connection limits from the settings: a statement that runs too long is
cancelled, a request that finds no free connection gives up, both as the outage error
the API answers 503 for. Against the machine's real PostgreSQL (its pass of the suite)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from bellhook.config import Settings
from bellhook.errors import StorageUnavailable
from bellhook.store.database import APPLICATION_NAME, Database, PoolOptions
from tests.postgres import needs_postgres, postgres_url


def test_the_settings_make_the_pool() -> None:
    settings = Settings(
        db_pool_size=3,
        db_max_overflow=1,
        db_pool_timeout=2.5,
        db_connect_timeout=1.5,
        db_statement_timeout=0.25,
    )
    options = PoolOptions.from_settings(settings).engine_options()
    assert (options["pool_size"], options["max_overflow"], options["pool_timeout"]) == (3, 1, 2.5)
    assert options["connect_args"]["timeout"] == 1.5
    assert options["connect_args"]["server_settings"] == {
        "application_name": APPLICATION_NAME,
        "statement_timeout": "250",
    }
    unbounded = PoolOptions(statement_timeout=0).engine_options()
    assert "statement_timeout" not in unbounded["connect_args"]["server_settings"]


@needs_postgres
async def test_a_statement_that_runs_too_long_is_cancelled() -> None:
    db = Database(postgres_url(), pool=PoolOptions(statement_timeout=0.2))
    try:
        with pytest.raises(StorageUnavailable):
            async with db.read() as conn:
                await conn.execute(text("SELECT pg_sleep(5)"))
        with pytest.raises(StorageUnavailable):
            async with db.direct() as tx:
                await tx.fetch("SELECT pg_sleep(5)")
        async with db.read() as conn:  # the connection is usable again
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.close()


@needs_postgres
async def test_no_free_connection_is_an_outage_not_a_crash() -> None:
    db = Database(postgres_url(), pool=PoolOptions(size=1, max_overflow=0, timeout=0.2))
    try:
        holding = asyncio.Event()
        done = asyncio.Event()

        async def hold() -> None:
            async with db.read():
                holding.set()
                await done.wait()

        task = asyncio.create_task(hold())
        await holding.wait()
        with pytest.raises(StorageUnavailable):
            async with db.read():
                pass
        with pytest.raises(StorageUnavailable):
            async with db.direct():
                pass
        assert await db.ping() is False
        done.set()
        await task
        assert await db.ping() is True
    finally:
        await db.close()
