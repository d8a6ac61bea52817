"""``bellhook listen``: the real CLI in a subprocess, receiving from a real bellhook.

A ``bellhook serve --dev`` subprocess delivers to a ``bellhook listen --json``
subprocess; the listener prints one JSON line per request, which the tests await
(no sleeps). Tampered or unsigned requests are sent to the listener directly.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bellhook.domain.signing import PayloadTemplate, signature_headers
from bellhook.verify import verify_signature, verify_standard
from tests.support import (
    WAIT,
    Server,
    bellhook_env,
    create_admin_key,
    create_webhook,
    delivery_of,
    eventually,
    free_port,
    publish,
    receiver_pool,
    settled,
    status,
)

pytestmark = pytest.mark.timeout(180)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # a generated-style secret
OTHER = "a-secret-we-chose-ourselves-0123456789"  # a plain one, used as its UTF-8 bytes
STRANGER = "not-the-webhooks-secret-at-all-42"
BOTH = ["x-webhook-signature", "standard-webhooks"]
STARTUP = "Listening on "


class Listener:
    """One ``python -m bellhook listen --json`` subprocess."""

    def __init__(self, args: list[str], env: dict[str, str], *, json_lines: bool = True) -> None:
        self.port = free_port()
        self.json_lines = json_lines
        self.args = ["listen", "--port", str(self.port), *(["--json"] if json_lines else []), *args]
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._started = asyncio.Event()
        self._printed = asyncio.Condition()
        self._readers: list[asyncio.Task[None]] = []

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bellhook", *self.args,
            env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]
        started = asyncio.create_task(self._started.wait())
        exited = asyncio.create_task(self.proc.wait())
        done, _ = await asyncio.wait({started, exited}, timeout=60, return_when="FIRST_COMPLETED")
        started.cancel()
        exited.cancel()
        if started not in done:
            await asyncio.gather(*self._readers, return_exceptions=True)
            pytest.fail(f"bellhook listen did not start:\n{self.output()}")

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := (await self.proc.stdout.readline()).decode():
            self.stdout.append(line)
            if self.json_lines:
                self.lines.put_nowait(json.loads(line))
            async with self._printed:
                self._printed.notify_all()

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := (await self.proc.stderr.readline()).decode():
            self.stderr.append(line)
            if line.startswith(STARTUP):
                self._started.set()

    async def next_line(self) -> dict[str, Any]:
        """The listener's line about the next request it answers."""
        try:
            return await asyncio.wait_for(self.lines.get(), WAIT)
        except TimeoutError:
            pytest.fail(f"bellhook listen printed no line within {WAIT} s:\n{self.output()}")

    async def printed(self, text: str) -> str:
        """All of stdout, once it contains ``text`` (without --json)."""

        async def seen() -> None:
            async with self._printed:
                await self._printed.wait_for(lambda: text in "".join(self.stdout))

        try:
            await asyncio.wait_for(seen(), WAIT)
        except TimeoutError:
            pytest.fail(f"bellhook listen did not print {text!r}:\n{self.output()}")
        return "".join(self.stdout)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                pytest.fail(f"bellhook listen did not stop on {sig}:\n{self.output()}")
        await asyncio.gather(*self._readers)
        assert self.proc.returncode is not None
        return self.proc.returncode

    def output(self) -> str:
        return "stdout:\n" + "".join(self.stdout) + "stderr:\n" + "".join(self.stderr)


StartListener = Callable[..., Awaitable[Listener]]


@pytest.fixture
async def listener() -> AsyncIterator[StartListener]:
    """``await listener("--secret", S, ...)`` starts one; each must stop cleanly."""
    started: list[Listener] = []

    async def start(*args: str, json_lines: bool = True, **env: str) -> Listener:
        proc = Listener(list(args), bellhook_env(**env), json_lines=json_lines)
        started.append(proc)
        await proc.start()
        return proc

    yield start
    for proc in started:
        code = await proc.stop()
        assert code == 0, proc.output()
        assert "Traceback" not in proc.output(), proc.output()


@dataclass
class Bellhook:
    server: Server
    api: httpx.AsyncClient


@pytest.fixture
async def bellhook(database_url: str, tmp_path: Path) -> AsyncIterator[Bellhook]:
    """A ``bellhook serve --dev`` subprocess and an admin client of its API."""
    # One attempt per event within a test: the first retry would come an hour later.
    env = bellhook_env(BELLHOOK_DATABASE_URL=database_url, BELLHOOK_RETRY_SCHEDULE="3600")
    token = await create_admin_key(env)
    server = Server(env, tmp_path / "serve.log")
    try:
        await server.start()
        async with httpx.AsyncClient(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as api:
            yield Bellhook(server, api)
    except BaseException:
        print("--- bellhook serve ---\n", server.output())
        raise
    finally:
        await server.stop()


def signed(secret: str, data: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """A body and headers as bellhook would send them, signed with ``secret`` now."""
    template = PayloadTemplate(
        "evt_local1", "post.created", "2024-01-01T00:00:00Z", json.dumps(data or {"id": "p1"})
    )
    body = template.render(secret)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Bellhook/test",
        "X-Webhook-Event": "post.created",
        "X-Webhook-Id": "evt_local1",
        "X-Webhook-Attempt": "1",
        **signature_headers(body, "evt_local1", int(time.time()), [secret]),
    }
    return body, headers


def replayable(headers: Any) -> dict[str, str]:
    """A received request's headers, minus those of its own connection."""
    return {k: v for k, v in headers.items() if k.lower() not in {"host", "content-length"}}


async def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(url, content=body, headers=headers)


# --- genuine deliveries --------------------------------------------------------------------


async def test_a_real_delivery_verifies_with_both_schemes(
    bellhook: Bellhook, listener: StartListener
) -> None:
    rx = await listener("--secret", SECRET)
    hook = await create_webhook(bellhook.api, rx.url("/webhook"), secret=SECRET)

    accepted = await publish(bellhook.api, "post.created", {"id": "post_1", "text": "héllo"})

    line = await rx.next_line()
    assert line == {
        "event": "post.created",
        "id": accepted["id"],
        "verified": BOTH,
        "status": 200,
        "forwarded_status": None,
    }
    detail = await settled(bellhook.api, hook["id"], accepted["id"], "succeeded")
    assert [a["statusCode"] for a in detail["attempts"]] == [200]
    assert json.loads(detail["attempts"][0]["responseBody"]) == {"ok": True}


async def test_the_secret_can_come_from_the_environment_and_sigint_stops_it(
    bellhook: Bellhook, listener: StartListener
) -> None:
    rx = await listener(BELLHOOK_LISTEN_SECRET=OTHER)
    hook = await create_webhook(bellhook.api, rx.url(), secret=OTHER)
    accepted = await publish(bellhook.api)
    assert (await rx.next_line())["verified"] == BOTH
    await settled(bellhook.api, hook["id"], accepted["id"], "succeeded")
    assert await rx.stop(signal.SIGINT) == 0


async def test_without_json_it_pretty_prints_each_delivery(
    bellhook: Bellhook, listener: StartListener
) -> None:
    rx = await listener("--secret", SECRET, json_lines=False)
    assert f"{STARTUP}{rx.url()} — register it with a webhook in dev mode" in rx.stderr[0]
    hook = await create_webhook(bellhook.api, rx.url(), secret=SECRET)
    accepted = await publish(bellhook.api, "post.created", {"id": "post_7", "title": "Hi"})
    await settled(bellhook.api, hook["id"], accepted["id"], "succeeded")
    shown = await rx.printed("→ 200")
    assert f"✓ post.created {accepted['id']}" in shown
    assert "verified: X-Webhook-Signature, Standard Webhooks" in shown
    assert "X-Webhook-Attempt: 1" in shown
    assert '"title": "Hi"' in shown  # the body, indented
    assert '    "id": "post_7"' in shown

    body, headers = signed(STRANGER)
    assert (await post(rx.url("/elsewhere"), body, headers)).status_code == 401
    shown = await rx.printed("refused")
    assert "✗ refused POST /elsewhere (401): X-Webhook-Signature does not match" in shown
    assert SECRET not in shown + "".join(rx.stderr)


# --- refused deliveries --------------------------------------------------------------------


async def test_tampered_and_unsigned_deliveries_are_refused(
    bellhook: Bellhook, listener: StartListener
) -> None:
    # Capture a genuine delivery at a plain receiver, then replay it to the listener.
    async with receiver_pool() as start:
        capture = await start()
        hook = await create_webhook(bellhook.api, capture.url(), secret=SECRET)
        accepted = await publish(bellhook.api)
        [genuine] = await capture.wait_for_count(1)
        await settled(bellhook.api, hook["id"], accepted["id"], "succeeded")
    rx = await listener("--secret", SECRET)
    headers = replayable(genuine.headers)

    # Unchanged (within the timestamp tolerance) it verifies: what follows fails
    # because of the change alone.
    resp = await post(rx.url("/hook"), genuine.body, headers)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True}
    assert (await rx.next_line())["verified"] == BOTH

    def refused(resp: httpx.Response) -> str:
        assert resp.status_code == 401, resp.text
        body = resp.json()
        assert set(body) == {"ok", "error"} and body["ok"] is False, body
        error: str = body["error"]
        assert SECRET not in error
        return error

    async def refusal_line() -> dict[str, Any]:
        line = await rx.next_line()
        assert line["status"] == 401 and line["verified"] == [], line
        assert line["forwarded_status"] is None
        assert SECRET not in json.dumps(line)
        return line

    # One byte of the body changed.
    at = genuine.body.index(b"post_1")
    tampered = genuine.body[:at] + b"P" + genuine.body[at + 1 :]
    error = refused(await post(rx.url("/hook"), tampered, headers))
    assert "X-Webhook-Signature does not match" in error
    line = await refusal_line()
    assert line["error"] == error
    assert line["id"] == accepted["id"]  # from the headers, to tell which one it was

    # A wrong X-Webhook-Signature, though the Standard Webhooks headers are right:
    # each scheme a delivery carries must pass.
    wrong = {**headers, "X-Webhook-Signature": "0" * 64}
    assert "X-Webhook-Signature" in refused(await post(rx.url("/hook"), genuine.body, wrong))
    await refusal_line()

    # Only the Standard Webhooks headers, one of them wrong.
    standard_only = {k: v for k, v in headers.items() if k.lower() != "x-webhook-signature"}
    forged = {**standard_only, "webhook-signature": "v1," + "A" * 43 + "="}
    error = refused(await post(rx.url("/hook"), genuine.body, forged))
    assert "webhook-signature" in error
    await refusal_line()
    # ... and right, while the X-Webhook-Signature is absent: it verifies on its own.
    resp = await post(rx.url("/hook"), genuine.body, standard_only)
    assert resp.status_code == 200, resp.text
    assert (await rx.next_line())["verified"] == ["standard-webhooks"]

    # No signature header at all.
    unsigned = {
        k: v for k, v in headers.items() if "signature" not in k.lower() and "webhook-" not in k
    }
    error = refused(await post(rx.url("/hook"), genuine.body, unsigned))
    assert "no signature header" in error
    await refusal_line()

    # Signed with another secret.
    body, other = signed(STRANGER)
    assert "X-Webhook-Signature does not match" in refused(await post(rx.url(), body, other))
    await refusal_line()

    # Not a delivery at all.
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.get(rx.url("/hook"))
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "POST"


# --- forwarding ------------------------------------------------------------------------------


async def test_forwarding_relays_the_apps_answer_to_bellhook(
    bellhook: Bellhook, listener: StartListener
) -> None:
    async with receiver_pool() as start:
        app = await start(status(202, b"queued by the app", {"Content-Type": "text/plain"}))
        rx = await listener("--secret", SECRET, "--forward-to", app.url("/app/webhook"))
        hook = await create_webhook(bellhook.api, rx.url("/webhook"), secret=SECRET)

        accepted = await publish(bellhook.api, "post.created", {"id": "post_9"})
        line = await rx.next_line()
        assert line == {
            "event": "post.created",
            "id": accepted["id"],
            "verified": BOTH,
            "status": 202,
            "forwarded_status": 202,
        }
        detail = await settled(bellhook.api, hook["id"], accepted["id"], "succeeded")
        [attempt] = detail["attempts"]
        assert attempt["statusCode"] == 202
        assert attempt["responseBody"] == "queued by the app"
        # The app got the delivery as bellhook sent it: both signatures still verify.
        [hit] = app.hits
        assert hit.path == "/app/webhook"
        verify_signature(hit.body, hit.headers["X-Webhook-Signature"], SECRET)
        assert verify_standard(hit.body, hit.headers, SECRET)["data"] == {"id": "post_9"}
        assert hit.headers["X-Webhook-Id"] == accepted["id"]
        assert hit.headers["X-Webhook-Attempt"] == "1"
        assert hit.headers["User-Agent"].startswith("Bellhook/")

        # The app fails: bellhook sees the failure (and will retry).
        app.respond = status(500, b"the app broke")
        failing = await publish(bellhook.api, "post.created", {"id": "post_10"})
        line = await rx.next_line()
        assert (line["id"], line["status"], line["forwarded_status"]) == (failing["id"], 500, 500)
        detail = await _first_attempt(bellhook, hook["id"], failing["id"])
        assert detail["status"] == "pending"  # to be retried
        assert detail["lastStatusCode"] == 500
        assert detail["attempts"][0]["statusCode"] == 500
        assert detail["attempts"][0]["responseBody"] == "the app broke"

        # Body and headers go on byte for byte.
        app.respond = status(200, b"ok")
        body, headers = signed(SECRET, {"id": "p1", "n": 1.5})
        headers["X-Custom"] = "kept"
        resp = await post(rx.url("/webhook"), body, headers)
        assert (resp.status_code, resp.text) == (200, "ok")
        assert (await rx.next_line())["forwarded_status"] == 200
        last = app.hits[-1]
        assert last.body == body
        for name, value in headers.items():
            assert last.headers[name] == value, name

        # A refused delivery is not forwarded.
        resp = await post(rx.url("/webhook"), body.replace(b"p1", b"p2"), headers)
        assert resp.status_code == 401
        await rx.next_line()
        assert len(app.hits) == 3


async def _first_attempt(bellhook: Bellhook, webhook_id: str, event_id: str) -> dict[str, Any]:
    detail: dict[str, Any] = await eventually(
        lambda: delivery_of(bellhook.api, webhook_id, event_id),
        lambda d: len(d["attempts"]) >= 1 and d["lastStatusCode"] is not None,
        what="the first attempt logged",
    )
    return detail


async def test_an_unreachable_forward_target_gets_502(listener: StartListener) -> None:
    target = f"http://127.0.0.1:{free_port()}/webhook"  # nothing listens there
    rx = await listener("--secret", SECRET, "--forward-to", target)
    body, headers = signed(SECRET)
    resp = await post(rx.url(), body, headers)
    assert resp.status_code == 502, resp.text
    assert resp.json()["ok"] is False
    assert target in resp.json()["error"]
    line = await rx.next_line()
    assert line["status"] == 502 and line["forwarded_status"] is None
    assert line["verified"] == BOTH
    assert target in line["error"]


# --- secret rotation ---------------------------------------------------------------------------


async def test_either_of_two_secrets_verifies(bellhook: Bellhook, listener: StartListener) -> None:
    rx = await listener("--secret", OTHER, "--secret", SECRET)
    hook = await create_webhook(bellhook.api, rx.url(), secret=SECRET)  # the second one
    accepted = await publish(bellhook.api)
    assert (await rx.next_line())["verified"] == BOTH
    await settled(bellhook.api, hook["id"], accepted["id"], "succeeded")

    # Signed with the first, directly.
    body, headers = signed(OTHER)
    assert (await post(rx.url(), body, headers)).status_code == 200
    assert (await rx.next_line())["verified"] == BOTH

    # Neither.
    body, headers = signed(STRANGER)
    resp = await post(rx.url(), body, headers)
    assert resp.status_code == 401
    assert "any of the 2 secrets" in resp.json()["error"]
    await rx.next_line()


async def test_a_listener_with_the_old_secret_verifies_during_a_rotation(
    bellhook: Bellhook, listener: StartListener
) -> None:
    rx = await listener("--secret", OTHER)
    hook = await create_webhook(bellhook.api, rx.url(), secret=OTHER)
    rotated = await bellhook.api.post(
        f"/api/webhooks/{hook['id']}/secret/rotate",
        json={"secret": SECRET, "graceSeconds": 3600},
    )
    assert rotated.status_code == 200, rotated.text

    # Signed with both: X-Webhook-Signature-Previous and the second webhook-signature
    # carry the old secret.
    accepted = await publish(bellhook.api)
    assert (await rx.next_line())["verified"] == BOTH
    await settled(bellhook.api, hook["id"], accepted["id"], "succeeded")


async def test_path_limits_where_deliveries_are_answered(listener: StartListener) -> None:
    rx = await listener("--secret", SECRET, "--path", "/hook")
    assert rx.url("/hook") in rx.stderr[0]
    body, headers = signed(SECRET)
    assert (await post(rx.url("/other"), body, headers)).status_code == 404
    resp = await post(rx.url("/hook"), body, headers)
    assert resp.status_code == 200, resp.text
    assert (await rx.next_line())["verified"] == BOTH
