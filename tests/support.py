"""Helpers the acceptance tests share: real HTTP receivers on loopback, a guard that
fails any connection elsewhere, and small wrappers around the bellhook API.

Receivers are aiohttp.web apps on 127.0.0.1 started by the tests, registered by IP
literal. Every wait is bounded (``asyncio.wait_for`` on a receiver's arrivals, or a
bounded poll of the delivery log), so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from bellhook.domain.models import Principal, Webhook
from bellhook.runtime import Runtime

SECRET = "s3cret-for-delivery-tests-0123456789"
WAIT = 20.0  # upper bound of any wait; a hang fails the test, never the timing

# --- receivers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One request a receiver got."""

    path: str
    headers: CIMultiDict[str]
    body: bytes
    at: float  # time.monotonic() on arrival
    seq: int  # arrival order, from 0

    @property
    def event_id(self) -> str:
        return self.headers["X-Webhook-Id"]

    @property
    def attempt(self) -> int:
        return int(self.headers["X-Webhook-Attempt"])

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Callable[["Receiver", web.Request, Hit], Awaitable[web.StreamResponse]]


async def ok(_rx: Receiver, _request: web.Request, _hit: Hit) -> web.StreamResponse:
    return web.Response(text="ok")


def status(code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Responder:
    async def respond(_rx: Receiver, _request: web.Request, _hit: Hit) -> web.StreamResponse:
        return web.Response(status=code, body=body, headers=headers)

    return respond


async def hang(rx: Receiver, _request: web.Request, _hit: Hit) -> web.StreamResponse:
    """Hold the request open until the receiver's ``release`` event is set."""
    await rx.release.wait()
    return web.Response(text="late")


def fail_first(n: int, then: Responder = ok, fail: Responder | None = None) -> Responder:
    """The first ``n`` requests of each event (by X-Webhook-Id) fail, later ones get ``then``."""
    failing = fail or status(500, b"not yet")

    async def respond(rx: Receiver, request: web.Request, hit: Hit) -> web.StreamResponse:
        seen = sum(1 for h in rx.hits if h.event_id == hit.event_id and h.seq <= hit.seq)
        return await (failing if seen <= n else then)(rx, request, hit)

    return respond


class Receiver:
    """An aiohttp.web app on 127.0.0.1 that records every request in arrival order.

    ``respond`` decides the answer and may be swapped at any time; ``release`` frees
    requests held by ``hang`` (it is set at teardown). ``in_flight``/``max_in_flight``
    count requests being answered at once.
    """

    def __init__(self, respond: Responder = ok) -> None:
        self.respond = respond
        self.hits: list[Hit] = []
        self.release = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application(client_max_size=1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a request the client gave up on (a timeout) stops
        # counting as in flight when its connection closes.
        self._runner = web.AppRunner(
            app, shutdown_timeout=2.0, access_log=None, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        hit = Hit(
            request.path, CIMultiDict(request.headers), body, time.monotonic(), len(self.hits)
        )
        self.hits.append(hit)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            async with self._changed:
                self._changed.notify_all()
            return await self.respond(self, request, hit)
        finally:
            self.in_flight -= 1

    async def wait_until(
        self, predicate: Callable[[list[Hit]], bool], *, timeout: float = WAIT, what: str = ""
    ) -> list[Hit]:
        """Wait for ``predicate(hits)`` to hold; fails the test after ``timeout`` seconds."""

        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.hits))

        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            seen = [
                (h.path, h.headers.get("X-Webhook-Id"), h.headers.get("X-Webhook-Attempt"))
                for h in self.hits
            ]
            pytest.fail(
                f"receiver did not get {what or 'what was expected'} "
                f"within {timeout} s; it got {len(seen)} requests: {seen[:50]}"
            )
        return list(self.hits)

    async def wait_for_count(
        self, n: int, *, timeout: float = WAIT, path: str | None = None
    ) -> list[Hit]:
        def enough(hits: list[Hit]) -> bool:
            return len([h for h in hits if path is None or h.path == path]) >= n

        hits = await self.wait_until(enough, timeout=timeout, what=f"{n} requests")
        return [h for h in hits if path is None or h.path == path]

    def of(self, event_id: str) -> list[Hit]:
        return [h for h in self.hits if h.headers.get("X-Webhook-Id") == event_id]


@asynccontextmanager
async def receiver_pool() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    """``await start(respond)`` starts a receiver; all are released and stopped on exit."""
    started: list[Receiver] = []

    async def start(respond: Responder = ok) -> Receiver:
        rx = Receiver(respond)
        await rx.start()
        started.append(rx)
        return rx

    try:
        yield start
    finally:
        for rx in started:
            rx.release.set()
        for rx in started:
            await rx.close()


LOOPBACK = frozenset({ip_address("127.0.0.1"), ip_address("::1")})


class ConnectLog:
    """The connections a test made: to loopback (``seen``) and refused (``violations``)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.violations: list[object] = []


def guard_loopback(monkeypatch: pytest.MonkeyPatch) -> ConnectLog:
    """Make any connection from this process to a non-loopback address fail loudly.

    Returns the log of connections (check its violations are empty at teardown).
    """
    log = ConnectLog()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def allowed(address: Any) -> bool:
        if not isinstance(address, tuple):
            return True  # AF_UNIX
        host = str(address[0]).split("%")[0]
        if ip_address(host) in LOOPBACK:
            log.seen.append((host, int(address[1])))
            return True
        log.violations.append(address)
        return False

    def connect(self: socket.socket, address: Any) -> None:
        if not allowed(address):
            raise AssertionError(f"test tried to connect to {address!r}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not allowed(address):
            raise AssertionError(f"test tried to connect to {address!r}")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return log


# --- API helpers -------------------------------------------------------------------------


def ok_data(resp: httpx.Response, status_code: int = 200) -> Any:
    """The ``data`` of a success envelope (None when it has none, as DELETE)."""
    assert resp.status_code == status_code, resp.text
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert body["success"] is True, body
    assert set(body) <= {"success", "data", "pagination"}, body
    return body.get("data")


def error_of(resp: httpx.Response, status_code: int) -> dict[str, Any]:
    """The ``error`` of an error envelope, checking its exact shape."""
    assert resp.status_code == status_code, resp.text
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"success", "error"}, body
    assert body["success"] is False
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    return error


ADMIN = Principal(key_id="key_x", owner_id="ops", is_admin=True)


async def admin_webhook(
    rt: Runtime, now: datetime, url: str = "https://example.com/h", secret: str = "s" * 20
) -> Webhook:
    """A webhook for every event, made through the repository (no API, no key)."""
    return await rt.webhooks.create(
        ADMIN, url=url, events=("*",), description=None, secret=secret, now=now
    )


async def create_webhook(
    api: httpx.AsyncClient, url: str, events: list[str] | None = None, secret: str = SECRET
) -> dict[str, Any]:
    body = {"url": url, "events": events or ["post.created"], "secret": secret}
    data: dict[str, Any] = ok_data(await api.post("/api/webhooks", json=body), 201)
    return data


async def publish(
    api: httpx.AsyncClient,
    event: str = "post.created",
    data: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body = {"event": event, "data": {"id": "post_1"} if data is None else data, **fields}
    accepted: dict[str, Any] = ok_data(
        await api.post("/api/events", json=body, headers=headers), 202
    )
    return accepted


async def publish_batch(api: httpx.AsyncClient, ids: list[str]) -> None:
    """One ``post.created`` event per id, in one call to ``POST /api/events/batch``."""
    batch = ok_data(
        await api.post(
            "/api/events/batch",
            json={"events": [{"id": i, "event": "post.created", "data": {}} for i in ids]},
        ),
        202,
    )
    assert batch["accepted"] == len(ids)


async def deliveries(
    api: httpx.AsyncClient, webhook_id: str, **params: Any
) -> list[dict[str, Any]]:
    """Every delivery of a webhook (all pages), newest first."""
    items: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": 100, **params}
    while True:
        resp = await api.get(f"/api/webhooks/{webhook_id}/deliveries", params=query)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        items.extend(body["data"])
        cursor = body["pagination"]["nextCursor"]
        if not cursor:
            return items
        query["cursor"] = cursor


async def delivery_of(api: httpx.AsyncClient, webhook_id: str, event_id: str) -> dict[str, Any]:
    found = [d for d in await deliveries(api, webhook_id) if d["eventId"] == event_id]
    assert len(found) == 1, found
    detail: dict[str, Any] = ok_data(
        await api.get(f"/api/webhooks/{webhook_id}/deliveries/{found[0]['id']}")
    )
    return detail


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    until: Callable[[Any], bool],
    *,
    timeout: float = WAIT,
    what: str = "",
) -> Any:
    """Poll ``probe()`` (e.g. the delivery log, which cannot be awaited) until ``until``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what or 'condition'} not reached within {timeout} s; last: {value}")
        await asyncio.sleep(0.05)


async def settled(
    api: httpx.AsyncClient, webhook_id: str, event_id: str, state: str, *, timeout: float = WAIT
) -> dict[str, Any]:
    """The delivery's detail once its status is ``state``."""
    detail: dict[str, Any] = await eventually(
        lambda: delivery_of(api, webhook_id, event_id),
        lambda d: d["status"] == state,
        timeout=timeout,
        what=f"delivery of {event_id} {state}",
    )
    return detail


def signature_ok(hit: Hit, secret: str = SECRET) -> bool:
    expected = hmac.new(secret.encode(), hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(hit.headers.get("X-Webhook-Signature", ""), expected)


def parse_ts(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


@dataclass
class Setup:
    svc: Any
    api: httpx.AsyncClient


Start = Callable[..., Awaitable[Receiver]]
Deliver = Callable[..., Awaitable[Setup]]


# --- bellhook as a subprocess ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def bellhook_env(**variables: str) -> dict[str, str]:
    """This process's environment without BELLHOOK_* variables, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BELLHOOK_")}
    env.update(variables)
    return env


async def create_admin_key(env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bellhook", "keys", "create", "--owner", "ops", "--admin",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip().splitlines()[-1].strip()


class Server:
    """One ``bellhook serve --dev`` subprocess (or ``bellhook worker --dev <worker>...``, or
    ``bellhook consume <consume>...``);
    its output goes to a log file and can be awaited line by line."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *,
        worker: Sequence[str] | None = None,
        consume: Sequence[str] | None = None,
    ):
        self.env = env
        self.port = free_port()
        self.worker = worker  # the worker's arguments: run a worker instead of serve
        self.consume = consume  # the arguments of `bellhook consume`, to run it instead
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self._lines: list[str] = []
        self._new_line = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self.consume is not None:
            command = ["consume", *self.consume]
        elif self.worker is not None:
            command = ["worker", "--dev", *self.worker]
        else:
            command = ["serve", "--dev", "--port", str(self.port)]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bellhook", *command,
            env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read_output())
        if self.consume is not None:
            await self.wait_for_output("kafka.started")
            return
        if self.worker is not None:
            await self.wait_for_output("dispatcher.started")
            return
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:
            while True:
                if self.proc.returncode is not None:
                    pytest.fail(f"bellhook serve exited early:\n{self.output()}")
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"bellhook serve not healthy within 30 s:\n{self.output()}")
                await asyncio.sleep(0.1)

    async def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.log.open("a") as out:
            while line := (await self.proc.stdout.readline()).decode(errors="replace"):
                out.write(line)
                self._lines.append(line)
                self._new_line.set()
        self._new_line.set()  # end of output

    async def wait_for_output(self, marker: str, timeout: float = WAIT) -> None:
        """Until a line of output contains ``marker``."""

        async def seen() -> None:
            checked = 0
            while True:
                self._new_line.clear()
                if any(marker in line for line in self._lines[checked:]):
                    return
                checked = len(self._lines)
                assert self._reader is not None
                if self._reader.done():
                    raise AssertionError(f"bellhook exited before printing {marker!r}")
                await self._new_line.wait()

        await asyncio.wait_for(seen(), timeout)

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no drain, no flush."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.wait()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.wait(), 15)
        except TimeoutError:
            await self.kill()

    def output(self) -> str:
        return "".join(self._lines)[-4000:]

    def output_all(self) -> str:
        return "".join(self._lines)

    def output_lines(self) -> list[str]:
        return [line.rstrip("\n") for line in self._lines]


# --- /metrics (prometheus-client's own parser) --------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``; a test fails if it is not exported."""
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        pytest.fail(f"no sample {name}{labels} among {sorted({n for n, _ in samples})}")
    return samples[key]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def scrape(client: httpx.AsyncClient, path: str = "/metrics") -> Samples:
    resp = await client.get(path)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return parse(resp.text)
