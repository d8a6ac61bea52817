"""The machine's real PostgreSQL, for the tests of several processes on one database:
its URL in the suite's PostgreSQL pass, and the faults an operator meets (every
bellhook connection terminated, the server restarted)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import TEST_DATABASE_URL

needs_postgres = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="needs BELLHOOK_TEST_DATABASE_URL (the PostgreSQL pass)"
)


def postgres_url() -> str:
    assert TEST_DATABASE_URL is not None
    return TEST_DATABASE_URL.replace("postgresql+asyncpg://", "postgresql://", 1)


_OF_BELLHOOK = " WHERE application_name LIKE 'bellhook%' AND datname = current_database()"


async def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, server_settings={"application_name": "tests"})
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def bellhook_connections(url: str) -> list[str]:
    """application_name of every connection bellhook holds (pools and listeners)."""
    rows = await _fetch(url, "SELECT application_name FROM pg_stat_activity" + _OF_BELLHOOK)
    return [r["application_name"] for r in rows]


async def terminate_bellhook_connections(url: str) -> int:
    """``pg_terminate_backend`` of every bellhook connection to the database of ``url``;
    how many there were."""
    rows = await _fetch(
        url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity" + _OF_BELLHOOK
    )
    return len(rows)


def _cluster() -> tuple[str, str]:
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    return versions[-1], "main"


async def restart_postgres() -> None:
    """``pg_ctlcluster <version> main restart``: every connection goes, the server comes
    back (the command returns once it accepts connections again)."""
    version, cluster = _cluster()
    done = await asyncio.to_thread(
        subprocess.run,
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart", "-m", "fast"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
