"""Webhook secrets at rest: encrypted with BELLHOOK_ENCRYPTION_KEY, rotated with
``bellhook secrets reencrypt``, and never in a list, a log line or an error.

Receivers are aiohttp servers on 127.0.0.1 (development mode allows them); the
stored values are read straight from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web
from cryptography.fernet import Fernet
from sqlalchemy import select

from bellhook.config import Settings
from bellhook.domain.signing import standard_signature
from bellhook.errors import ConfigurationError
from bellhook.logs import configure_logging
from bellhook.runtime import open_runtime
from bellhook.store.secretbox import PREFIX, SecretBox, SecretUnreadable
from bellhook.store.tables import webhooks
from tests.support import ok_data

CLI_TIMEOUT = 90
WAIT = 30.0
K1 = Fernet.generate_key().decode()
K2 = Fernet.generate_key().decode()


# --- helpers ----------------------------------------------------------------------------


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1; ``status`` is what it answers."""

    port: int = 0
    status: int = 200
    seen: asyncio.Queue[Seen] = field(default_factory=asyncio.Queue)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def next(self) -> Seen:
        async with asyncio.timeout(WAIT):
            return await self.seen.get()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def handle(request: web.Request) -> web.Response:
        await state.seen.put(Seen(request.path, dict(request.headers), await request.read()))
        return web.Response(status=state.status, text="ok" if state.status < 300 else "nope")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    state.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield state
    finally:
        await runner.cleanup()


async def stored(service: Any, webhook_id: str) -> tuple[str, str | None]:
    """The webhook's secret columns exactly as they are in the database."""
    async with service.runtime.db.read() as conn:
        row = (
            await conn.execute(
                select(webhooks.c.secret, webhooks.c.previous_secret).where(
                    webhooks.c.id == webhook_id
                )
            )
        ).one()
    return row.secret, row.previous_secret


async def all_stored(service: Any) -> list[str]:
    async with service.runtime.db.read() as conn:
        rows = (await conn.execute(select(webhooks.c.secret, webhooks.c.previous_secret))).all()
    return [value for row in rows for value in row if value is not None]


def hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def assert_signed_with(seen: Seen, current: str, previous: str | None = None) -> None:
    assert seen.headers["X-Webhook-Signature"] == hex_hmac(current, seen.body)
    expected = [
        standard_signature(
            s, seen.headers["webhook-id"], int(seen.headers["webhook-timestamp"]), seen.body
        )
        for s in ([current, previous] if previous else [current])
    ]
    assert seen.headers["webhook-signature"].split(" ") == expected
    if previous is None:
        assert "X-Webhook-Signature-Previous" not in seen.headers
    else:
        assert seen.headers["X-Webhook-Signature-Previous"] == hex_hmac(previous, seen.body)


async def publish(service: Any, admin: str, owner: str, post: str) -> None:
    async with service.client(admin) as client:
        accepted = ok_data(
            await client.post(
                "/api/events",
                json={"event": "post.created", "audience": [owner], "data": {"id": post}},
            ),
            202,
        )
    assert accepted["deliveries"] >= 1


def cli(*args: str, database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BELLHOOK_")}
    return subprocess.run(
        [sys.executable, "-m", "bellhook", *args, "--database-url", database_url],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


# --- encrypted at rest, served and signed as before -------------------------------------


async def test_secrets_are_stored_encrypted_and_still_served_and_signed(
    serve: Callable[..., Any], receiver: Receiver
) -> None:
    service = await serve(encryption_key=K1, dev_mode=True, worker=True)
    owner = await service.new_key("acme")
    admin = await service.new_key("backend", admin=True)
    given, rotated = "acme-given-secret-0123456789", "acme-rotated-secret-9876543210"
    async with service.client(owner) as client:
        created = ok_data(
            await client.post(
                "/api/webhooks",
                json={"url": receiver.url(), "events": ["post.created"], "secret": given},
            ),
            201,
        )
        generated_hook = ok_data(
            await client.post(
                "/api/webhooks", json={"url": receiver.url("/other"), "events": ["comment.created"]}
            ),
            201,
        )
        generated = generated_hook["secret"]
        assert generated.startswith("whsec_")
        assert created["secret"] is None  # a given secret is never echoed

        # In the database: sealed, with the prefix, and not the secret.
        for webhook_id, secret in ((created["id"], given), (generated_hook["id"], generated)):
            value, previous = await stored(service, webhook_id)
            assert value.startswith(PREFIX)
            assert secret not in value
            assert SecretBox((K1,)).open(value) == secret
            assert previous is None

        # Through the API: only /secret has it.
        secret_out = ok_data(await client.get(f"/api/webhooks/{created['id']}/secret"))
        assert secret_out == {"secret": given, "previousSecretExpiresAt": None}
        assert (
            ok_data(await client.get(f"/api/webhooks/{generated_hook['id']}/secret"))["secret"]
            == generated
        )
        for path in ("/api/webhooks", f"/api/webhooks/{created['id']}"):
            text = (await client.get(path)).text
            assert given not in text and generated not in text and PREFIX not in text

        # Deliveries are signed with the secret itself, not with what is stored.
        await publish(service, admin, "acme", "post-1")
        assert_signed_with(await receiver.next(), given)

        rotation = ok_data(
            await client.post(
                f"/api/webhooks/{created['id']}/secret/rotate",
                json={"secret": rotated, "graceSeconds": 3600},
            )
        )
        assert rotation["secret"] == rotated
        value, previous = await stored(service, created["id"])
        assert previous is not None
        assert value.startswith(PREFIX) and previous.startswith(PREFIX)
        assert SecretBox((K1,)).open(value) == rotated
        assert SecretBox((K1,)).open(previous) == given
        for text in (value, previous):
            assert given not in text and rotated not in text

        await publish(service, admin, "acme", "post-2")
        assert_signed_with(await receiver.next(), rotated, given)
        tested = ok_data(await client.post(f"/api/webhooks/{created['id']}/test", json={}))
        assert tested["success"] is True
        assert_signed_with(await receiver.next(), rotated, given)


async def test_plain_legacy_secrets_still_work_once_a_key_is_set(
    serve: Callable[..., Any], receiver: Receiver
) -> None:
    legacy = "legacy-plain-secret-0123456789"
    before = await serve(dev_mode=True)
    owner = await before.new_key("acme")
    async with before.client(owner) as client:
        created = ok_data(
            await client.post(
                "/api/webhooks",
                json={"url": receiver.url(), "events": ["post.created"], "secret": legacy},
            ),
            201,
        )
    assert await stored(before, created["id"]) == (legacy, None)  # no key: stored as is

    with captured_logs("info") as logs:
        after = await serve(encryption_key=K1, dev_mode=True)
    # The operator is told that plain secrets remain to be encrypted.
    assert '"event": "security.plain_secrets_stored"' in logs.getvalue()
    assert legacy not in logs.getvalue()
    async with after.client(owner) as client:
        assert ok_data(await client.get(f"/api/webhooks/{created['id']}/secret"))["secret"] == (
            legacy
        )
        tested = ok_data(await client.post(f"/api/webhooks/{created['id']}/test", json={}))
        assert tested["success"] is True
        assert_signed_with(await receiver.next(), legacy)
        # A rotation under the key seals both the new and the old secret.
        ok_data(await client.post(f"/api/webhooks/{created['id']}/secret/rotate", json={}))
    value, previous = await stored(after, created["id"])
    assert previous is not None
    assert value.startswith(PREFIX) and previous.startswith(PREFIX)
    assert SecretBox((K1,)).open(previous) == legacy


# --- key rotation -----------------------------------------------------------------------


async def test_key_rotation_with_multifernet_and_reencrypt(
    serve: Callable[..., Any], database_url: str
) -> None:
    plain_service = await serve()
    owner = await plain_service.new_key("acme")
    secrets: dict[str, str] = {}
    async with plain_service.client(owner) as client:
        created = ok_data(
            await client.post(
                "/api/webhooks",
                json={
                    "url": "https://plain.example.com/hook",
                    "events": ["post.created"],
                    "secret": "plain-secret-0123456789",
                },
            ),
            201,
        )
        secrets[created["id"]] = "plain-secret-0123456789"

    old_key_service = await serve(encryption_key=K1)
    async with old_key_service.client(owner) as client:
        created = ok_data(
            await client.post(
                "/api/webhooks",
                json={
                    "url": "https://old.example.com/hook",
                    "events": ["post.created"],
                    "secret": "old-key-secret-0123456789",
                },
            ),
            201,
        )
        rotated = ok_data(
            await client.post(
                f"/api/webhooks/{created['id']}/secret/rotate",
                json={"secret": "old-key-rotated-0123456789", "graceSeconds": 3600},
            )
        )
        assert rotated["secret"] == "old-key-rotated-0123456789"
        secrets[created["id"]] = "old-key-rotated-0123456789"

    # The new key goes first; the old one stays after it and still decrypts.
    both = f"{K2},{K1}"
    rotating = await serve(encryption_key=both)
    async with rotating.client(owner) as client:
        for webhook_id, secret in secrets.items():
            got = ok_data(await client.get(f"/api/webhooks/{webhook_id}/secret"))
            assert got["secret"] == secret
        created = ok_data(
            await client.post(
                "/api/webhooks",
                json={
                    "url": "https://new.example.com/hook",
                    "events": ["post.created"],
                    "secret": "new-key-secret-0123456789",
                },
            ),
            201,
        )
        secrets[created["id"]] = "new-key-secret-0123456789"
    new_value, _ = await stored(rotating, created["id"])
    assert SecretBox((K2,)).open(new_value) == "new-key-secret-0123456789"  # first key encrypts

    done = await asyncio.to_thread(
        cli, "secrets", "reencrypt", database_url=database_url, BELLHOOK_ENCRYPTION_KEY=both
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    # The plain one and the old-key one changed; the one already under K2 did not.
    assert "re-encrypted the secrets of 2 of 3 webhooks" in done.stdout
    for text in (done.stdout, done.stderr):
        assert K1 not in text and K2 not in text

    values = await all_stored(rotating)
    assert len(values) == 4  # three secrets and one previous secret
    only_new = SecretBox((K2,))
    for value in values:
        assert value.startswith(PREFIX)
        only_new.open(value)  # the new key alone opens everything now
        with pytest.raises(SecretUnreadable):
            SecretBox((K1,)).open(value)

    again = await asyncio.to_thread(
        cli, "secrets", "reencrypt", database_url=database_url, BELLHOOK_ENCRYPTION_KEY=both
    )
    assert again.returncode == 0, again.stderr
    assert "re-encrypted the secrets of 0 of 3 webhooks" in again.stdout

    # The old key can go.
    new_key_only = await serve(encryption_key=K2)
    async with new_key_only.client(owner) as client:
        for webhook_id, secret in secrets.items():
            got = ok_data(await client.get(f"/api/webhooks/{webhook_id}/secret"))
            assert got["secret"] == secret

    # And the old key alone no longer starts bellhook, with a clear error.
    with pytest.raises(SecretUnreadable, match="cannot be decrypted"):
        async with open_runtime(Settings(database_url=database_url, encryption_key=K1)):
            pass


async def test_reencrypt_needs_a_key(database_url: str) -> None:
    result = await asyncio.to_thread(cli, "secrets", "reencrypt", database_url=database_url)
    assert result.returncode == 2
    assert "set BELLHOOK_ENCRYPTION_KEY" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


# --- clear errors at start and in the API ----------------------------------------------------


async def test_an_invalid_key_stops_the_start_with_a_clear_error(database_url: str) -> None:
    with pytest.raises(ConfigurationError, match="key 1 of 1 is not a Fernet key") as caught:
        async with open_runtime(
            Settings(database_url=database_url, encryption_key="not-a-real-key")
        ):
            pass
    assert "not-a-real-key" not in str(caught.value)

    result = await asyncio.to_thread(
        cli, "migrate", database_url=database_url, BELLHOOK_ENCRYPTION_KEY=f"{K1},not-a-real-key"
    )
    assert result.returncode == 1
    assert "key 2 of 2 is not a Fernet key" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert K1 not in result.stderr + result.stdout
    assert "not-a-real-key" not in result.stderr + result.stdout


async def test_encrypted_secrets_without_the_right_key_stop_the_start(
    serve: Callable[..., Any], database_url: str
) -> None:
    service = await serve(encryption_key=K1)
    owner = await service.new_key("acme")
    async with service.client(owner) as client:
        ok_data(
            await client.post(
                "/api/webhooks",
                json={"url": "https://a.example.com/", "events": ["post.created"]},
            ),
            201,
        )
    with pytest.raises(SecretUnreadable, match="BELLHOOK_ENCRYPTION_KEY is not set"):
        async with open_runtime(Settings(database_url=database_url)):
            pass
    with pytest.raises(SecretUnreadable, match="cannot be decrypted"):
        async with open_runtime(Settings(database_url=database_url, encryption_key=K2)):
            pass
    result = await asyncio.to_thread(cli, "migrate", database_url=database_url)
    assert result.returncode == 1
    assert "BELLHOOK_ENCRYPTION_KEY is not set" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


async def test_an_unreadable_secret_is_a_clear_api_error_and_does_not_stall_deliveries(
    serve: Callable[..., Any], receiver: Receiver
) -> None:
    # A keyless process that was already running when a keyed one encrypted a secret
    # (the situation the start-up check cannot catch).
    keyless = await serve(dev_mode=True, worker=True)
    keyed = await serve(dev_mode=True, encryption_key=K1)
    plain_owner = await keyless.new_key("plain")
    sealed_owner = await keyless.new_key("sealed")
    admin = await keyless.new_key("backend", admin=True)
    async with keyed.client(sealed_owner) as client:
        sealed_hook = ok_data(
            await client.post(
                "/api/webhooks", json={"url": receiver.url("/sealed"), "events": ["post.created"]}
            ),
            201,
        )
    async with keyless.client(plain_owner) as client:
        plain_hook = ok_data(
            await client.post(
                "/api/webhooks", json={"url": receiver.url("/plain"), "events": ["post.created"]}
            ),
            201,
        )
    async with keyless.client(admin) as client:
        accepted = ok_data(
            await client.post(
                "/api/events",
                json={"event": "post.created", "audience": "*", "data": {"id": "p"}},
            ),
            202,
        )
        assert accepted["deliveries"] == 2

    # The keyless dispatcher delivers what it can read, and skips the rest.
    seen = await receiver.next()
    assert seen.path == "/plain"

    async with keyless.client(sealed_owner) as client:
        for method, path in (
            ("GET", f"/api/webhooks/{sealed_hook['id']}/secret"),
            ("POST", f"/api/webhooks/{sealed_hook['id']}/test"),
        ):
            resp = await client.request(method, path, json={} if method == "POST" else None)
            assert resp.status_code == 500, resp.text
            error = resp.json()["error"]
            assert error["code"] == "secret_unreadable"
            assert "BELLHOOK_ENCRYPTION_KEY is not set" in error["message"]
            assert "Traceback" not in resp.text and 'File "' not in resp.text
            assert sealed_hook["secret"] not in resp.text
        # Reading the webhook itself still works.
        assert ok_data(await client.get(f"/api/webhooks/{sealed_hook['id']}"))["id"]
    async with keyed.client(sealed_owner) as client:
        listed = ok_data(await client.get(f"/api/webhooks/{sealed_hook['id']}/deliveries"))
        (delivery,) = [d for d in listed if not d["test"]]
        assert (delivery["status"], delivery["attemptCount"]) == ("pending", 0)
        # The process that has the key can still read it.
        got = ok_data(await client.get(f"/api/webhooks/{sealed_hook['id']}/secret"))
        assert got["secret"] == sealed_hook["secret"]
    assert receiver.seen.empty()
    assert plain_hook["id"]


# --- no secret in any log line -------------------------------------------------------------


async def logged(logs: io.StringIO, event: str, *, times: int) -> None:
    """Poll the captured log (a buffer cannot be awaited) until ``event`` shows ``times`` times."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while logs.getvalue().count(f'"event": "{event}"') < times:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{event} not logged {times} times within {WAIT} s")
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def captured_logs(level: str) -> Iterator[io.StringIO]:
    """bellhook's real logging configuration at ``level``, writing into a buffer."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_structlog = structlog.get_config()
    configure_logging(level, "json")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_structlog)


@pytest.mark.parametrize("key", [K1, None], ids=["encrypted", "unencrypted"])
async def test_no_secret_appears_in_any_log_line(
    serve: Callable[..., Any], receiver: Receiver, key: str | None
) -> None:
    with captured_logs("debug") as logs:
        service = await serve(dev_mode=True, worker=True, encryption_key=key, retry_schedule="60")
        owner = await service.new_key("acme")
        admin = await service.new_key("backend", admin=True)
        given, rotated = "log-test-given-secret-0123", "log-test-rotated-secret-0123"
        refused = "log-test-refused-secret "  # trailing space: refused
        async with service.client(owner) as client:
            hook = ok_data(
                await client.post(
                    "/api/webhooks",
                    json={"url": receiver.url(), "events": ["post.created"], "secret": given},
                ),
                201,
            )
            generated_hook = ok_data(
                await client.post(
                    "/api/webhooks", json={"url": receiver.url("/gen"), "events": ["*"]}
                ),
                201,
            )
            generated = generated_hook["secret"]
            bad = await client.post(
                "/api/webhooks",
                json={"url": receiver.url(), "events": ["post.created"], "secret": refused},
            )
            assert bad.status_code == 422 and refused.strip() not in bad.text

            # Deliver (both webhooks), then rotate, then fail.
            await publish(service, admin, "acme", "post-ok")
            firsts = [await receiver.next(), await receiver.next()]
            assert sorted(s.path for s in firsts) == ["/gen", "/hook"]
            ok_data(await client.get(f"/api/webhooks/{hook['id']}/secret"))
            ok_data(
                await client.post(
                    f"/api/webhooks/{hook['id']}/secret/rotate", json={"secret": rotated}
                )
            )
            regenerated = ok_data(
                await client.post(f"/api/webhooks/{generated_hook['id']}/secret/rotate", json={})
            )["secret"]
            receiver.status = 500
            await publish(service, admin, "acme", "post-fails")
            await receiver.next()
            await receiver.next()
            tested = ok_data(await client.post(f"/api/webhooks/{hook['id']}/test", json={}))
            assert tested["success"] is False
            await receiver.next()
            await logged(logs, "delivery.retry_scheduled", times=2)
        async with httpx.AsyncClient(base_url=service.base_url) as anon:
            forged = owner[:-4] + "AAAA"
            assert (
                await anon.get("/api/webhooks", headers={"Authorization": forged})
            ).status_code == 401
            assert (
                await anon.get("/api/webhooks", headers={"Authorization": f"Bearer {forged}"})
            ).status_code == 401

    text = logs.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    # The capture works: the flow's events are there, at debug level too.
    events = {line.get("event") for line in lines}
    assert {"delivery.succeeded", "delivery.retry_scheduled"} <= events, sorted(map(str, events))
    assert any(line.get("level") == "debug" for line in lines)

    secrets = {
        "given secret": given,
        "generated secret": generated,
        "rotated secret": rotated,
        "regenerated secret": regenerated,
        "refused secret": refused.strip(),
        "owner's API key": owner,
        "admin API key": admin,
        "forged API key": forged,
        "encryption key": K1,
    }
    leaks = {
        name: sorted({str(line.get("logger")) for line in lines if secret in json.dumps(line)})
        for name, secret in secrets.items()
        if secret in text
    }
    assert leaks == {}
