"""The bench's PostgreSQL helper (bench/run.py ``Postgres``) takes the URL forms bellhook
takes: ``postgresql://`` and SQLAlchemy's ``postgresql+asyncpg://``. Runs in the
PostgreSQL pass of the suite, against the machine's real server."""

from __future__ import annotations

import asyncio
import urllib.parse

import asyncpg
import pytest
from bench.procs import Postgres

from tests.conftest import TEST_DATABASE_URL

needs_postgres = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="needs BELLHOOK_TEST_DATABASE_URL (the PostgreSQL pass)"
)


async def database_names(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


@needs_postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+asyncpg"])
def test_fresh_databases_with_either_url_form(scheme: str) -> None:
    assert TEST_DATABASE_URL is not None
    plain = urllib.parse.urlsplit(TEST_DATABASE_URL)._replace(scheme="postgresql")
    pg = Postgres(urllib.parse.urlunsplit(plain._replace(scheme=scheme)))
    try:
        url = pg.fresh()
        name = urllib.parse.urlsplit(url).path.lstrip("/")
        assert urllib.parse.urlsplit(url).scheme == scheme  # what bellhook is given
        assert name in asyncio.run(database_names(urllib.parse.urlunsplit(plain)))
    finally:
        pg.drop_all()
    assert name not in asyncio.run(database_names(urllib.parse.urlunsplit(plain)))


def test_refuses_a_server_off_loopback() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        Postgres("postgresql://postgres@db.example.com:5432/test")
