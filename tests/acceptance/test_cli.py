"""The real ``bellhook`` command line, run as a subprocess against the test database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from bellhook.errors import AuthenticationFailed
from bellhook.store.database import Database
from bellhook.store.keys import AUTH_CACHE_SECONDS
from tests.support import free_port

CLI_TIMEOUT = 90


def cli_env(database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BELLHOOK_")}
    if database_url is not None:
        env["BELLHOOK_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def run_cli_sync(
    *args: str, database_url: str | None, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bellhook", *args],
        env=cli_env(database_url, **extra),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


async def run_cli(
    *args: str, database_url: str | None, **extra: str
) -> subprocess.CompletedProcess[str]:
    # In a thread, so that a service running in this event loop keeps serving.
    return await asyncio.to_thread(run_cli_sync, *args, database_url=database_url, **extra)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert result.stderr.strip(), "the failure is explained on stderr"
    return output


def last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "no output"
    return lines[-1]


async def create_key(database_url: str, *args: str) -> str:
    result = await run_cli("keys", "create", *args, database_url=database_url)
    assert_ok(result)
    token = last_line(result.stdout)
    assert token == token.strip() and " " not in token, result.stdout
    return token


# --- migrate ---------------------------------------------------------------------------


async def test_migrate_creates_the_schema_and_is_idempotent(database_url: str) -> None:
    first = await run_cli("migrate", database_url=database_url)
    assert_ok(first)
    second = await run_cli("migrate", database_url=database_url)
    assert_ok(second)
    db = Database(database_url)
    try:
        async with db.read() as conn:
            for table in ("api_keys", "webhooks"):
                count = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                assert count == 0, table
    finally:
        await db.close()


# --- keys ------------------------------------------------------------------------------


async def test_keys_create_prints_a_working_key(service: Any, database_url: str) -> None:
    token = await create_key(database_url, "--owner", "alice")
    principal = await service.runtime.keys.authenticate(token)
    assert principal.owner_id == "alice"
    assert principal.is_admin is False

    async with service.client(token) as client:
        resp = await client.post(
            "/api/webhooks",
            json={
                "url": "https://example.com/hook",
                "events": ["post.created"],
            },
        )
        assert resp.status_code == 201, resp.text
        listed = await client.get("/api/webhooks")
    assert [w["id"] for w in listed.json()["data"]] == [resp.json()["data"]["id"]]


async def test_keys_create_admin(service: Any, database_url: str) -> None:
    admin = await create_key(database_url, "--owner", "ops", "--admin")
    plain = await create_key(database_url, "--owner", "ops")
    assert admin != plain
    assert (await service.runtime.keys.authenticate(admin)).is_admin is True
    assert (await service.runtime.keys.authenticate(plain)).is_admin is False

    # The admin key reads another owner's webhook; the plain key of the same owner cannot.
    alice = await service.new_key("alice")
    async with service.client(alice) as client:
        created = await client.post(
            "/api/webhooks",
            json={
                "url": "https://example.com/hook",
                "events": ["*"],
            },
        )
    webhook_id = created.json()["data"]["id"]
    async with service.client(admin) as client:
        assert (await client.get(f"/api/webhooks/{webhook_id}")).status_code == 200
    async with service.client(plain) as client:
        assert (await client.get(f"/api/webhooks/{webhook_id}")).status_code == 404


async def test_keys_list_shows_ids_not_keys(service: Any, database_url: str) -> None:
    alice = await create_key(database_url, "--owner", "alice")
    bob = await create_key(database_url, "--owner", "bob", "--admin")
    alice_id = (await service.runtime.keys.authenticate(alice)).key_id
    bob_id = (await service.runtime.keys.authenticate(bob)).key_id

    result = await run_cli("keys", "list", database_url=database_url)
    assert_ok(result)
    for key_id in (alice_id, bob_id):
        assert key_id in result.stdout
    assert "alice" in result.stdout and "bob" in result.stdout
    for token in (alice, bob):
        assert token not in result.stdout + result.stderr
        assert token.rsplit("_", 1)[-1] not in result.stdout + result.stderr


async def test_keys_revoke(service: Any, database_url: str) -> None:
    token = await create_key(database_url, "--owner", "alice")
    keep = await create_key(database_url, "--owner", "alice")
    key_id = (await service.runtime.keys.authenticate(token)).key_id

    result = await run_cli("keys", "revoke", key_id, database_url=database_url)
    assert_ok(result)

    # The service caches keys that authenticated for AUTH_CACHE_SECONDS: a revocation by
    # another process (this CLI) is refused once that has passed, and not before.
    deadline = time.monotonic() + AUTH_CACHE_SECONDS + 5
    while True:
        try:
            await service.runtime.keys.authenticate(token)
        except AuthenticationFailed:
            break
        assert time.monotonic() < deadline, "a revoked key is still accepted"
        await asyncio.sleep(0.1)
    async with service.client(token) as client:
        assert (await client.get("/api/webhooks")).status_code == 401
    # Only that key.
    assert (await service.runtime.keys.authenticate(keep)).owner_id == "alice"
    async with service.client(keep) as client:
        assert (await client.get("/api/webhooks")).status_code == 200


async def test_keys_revoke_unknown_id_fails_cleanly(database_url: str) -> None:
    result = await run_cli("keys", "revoke", "key_doesnotexist", database_url=database_url)
    output = assert_clean_failure(result)
    assert "key_doesnotexist" in output


async def test_keys_create_needs_an_owner(database_url: str) -> None:
    assert_clean_failure(await run_cli("keys", "create", database_url=database_url))
    assert_clean_failure(await run_cli("keys", "create", "--owner", "", database_url=database_url))


# --- configuration errors ----------------------------------------------------------------


async def test_consume_without_a_cluster_says_which_setting_is_missing(database_url: str) -> None:
    output = assert_clean_failure(await run_cli("consume", database_url=database_url))
    assert "BELLHOOK_KAFKA_BOOTSTRAP_SERVERS" in output


async def test_consume_refuses_kafka_options_that_are_not_name_value(database_url: str) -> None:
    result = await run_cli(
        "consume",
        database_url=database_url,
        BELLHOOK_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",
        BELLHOOK_KAFKA_OPTIONS="session.timeout.ms",
    )
    assert "is not name=value" in assert_clean_failure(result)


async def test_invalid_port_fails_with_a_clear_message(database_url: str) -> None:
    result = await run_cli("serve", database_url=database_url, BELLHOOK_PORT="notanumber")
    output = assert_clean_failure(result)
    assert "port" in output.lower()
    assert "invalid configuration" in output.lower()


@pytest.mark.parametrize(
    ("variable", "value", "word"),
    [
        ("BELLHOOK_LOG_LEVEL", "loud", "log_level"),
        ("BELLHOOK_DELIVERY_TIMEOUT", "-1", "delivery_timeout"),
        ("BELLHOOK_PORT", "70000", "port"),
    ],
)
async def test_invalid_settings_fail_before_serving(
    database_url: str, variable: str, value: str, word: str
) -> None:
    result = await run_cli("serve", "--no-worker", database_url=database_url, **{variable: value})
    output = assert_clean_failure(result)
    assert word in output.lower()


@pytest.mark.parametrize("url", ["mysql://root@127.0.0.1/db", "not a url at all"])
async def test_unsupported_database_url_fails_cleanly(url: str) -> None:
    result = await run_cli("migrate", database_url=url)
    output = assert_clean_failure(result)
    assert "database" in output.lower()


# --- serve -----------------------------------------------------------------------------


def test_python_m_bellhook_serve_answers_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    database_url = f"sqlite:///{tmp_path / 'serve.db'}"
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bellhook", "serve", "--port", str(port), "--no-worker"],
        env=cli_env(database_url),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        body = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"serve exited early:\n{Path(log.name).read_text()}"
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if resp.status_code == 200:
                body = resp.json()
                break
            time.sleep(0.1)
        assert body is not None, f"/healthz never answered:\n{Path(log.name).read_text()}"
        assert body["success"] is True
        assert body["data"]["status"] == "ok"

        # It really is bellhook on that database: the API wants a key.
        resp = httpx.get(f"http://127.0.0.1:{port}/api/webhooks", timeout=5)
        assert resp.status_code == 401
        assert resp.json()["success"] is False

        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not stop on SIGTERM:\n{Path(log.name).read_text()}")
        assert code in (0, -signal.SIGTERM), Path(log.name).read_text()
        assert "Traceback" not in Path(log.name).read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


async def test_keys_list_says_when_a_key_was_last_used(service: Any, database_url: str) -> None:
    used = await create_key(database_url, "--owner", "alice")
    unused = await create_key(database_url, "--owner", "bob")
    async with service.client(used) as client:
        assert (await client.get("/api/webhooks")).status_code == 200

    keys = {k.owner_id: k for k in await service.runtime.keys.list()}
    assert keys["alice"].last_used_at is not None
    assert keys["bob"].last_used_at is None
    assert unused

    result = await run_cli("keys", "list", database_url=database_url)
    assert_ok(result)
    assert "last used" in result.stdout
    line = next(row for row in result.stdout.splitlines() if "alice" in row)
    assert keys["alice"].last_used_at.isoformat(timespec="seconds") in line
