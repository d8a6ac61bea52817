"""The machine's real PostgreSQL, for the tests of several processes on one database:
its URL in the suite's PostgreSQL pass, and the faults an operator meets (every
bellhook connection terminated, the server restarted)."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.parse
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


_OF_BELLHOOK = " WHERE application_name LIKE 'bellhook%' AND datname = $1"


def _admin_url(url: str) -> tuple[str, str]:
    """The server's ``postgres`` database (reachable while ``url``'s refuses
    connections), and the name of ``url``'s database."""
    parsed = urllib.parse.urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    return urllib.parse.urlunsplit(parsed._replace(path="/postgres")), parsed.path.lstrip("/")


async def _admin(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    admin, _name = _admin_url(url)
    conn = await asyncpg.connect(admin, server_settings={"application_name": "tests"})
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def bellhook_connections(url: str) -> list[str]:
    """application_name of every connection bellhook holds to ``url``'s database (pools
    and listeners)."""
    sql = "SELECT application_name FROM pg_stat_activity" + _OF_BELLHOOK
    return [r["application_name"] for r in await _admin(url, sql, _admin_url(url)[1])]


async def terminate_bellhook_connections(url: str) -> int:
    """``pg_terminate_backend`` of every bellhook connection to ``url``'s database; how
    many there were."""
    sql = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity" + _OF_BELLHOOK
    return len(await _admin(url, sql, _admin_url(url)[1]))


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


async def allow_connections(url: str, allowed: bool) -> None:
    """``ALTER DATABASE ... ALLOW_CONNECTIONS``: with it off, no new connection to
    ``url``'s database is accepted, from anyone."""
    name = _admin_url(url)[1]
    await _admin(url, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
