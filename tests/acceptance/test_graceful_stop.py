"""SIGTERM: bellhook takes no new work, finishes the deliveries in flight, then exits."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bellhook.config import Settings
from bellhook.runtime import open_runtime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_cli(env: dict[str, str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bellhook",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    return out.decode()


class SlowReceiver:
    """Holds each request until released, so that a delivery is in flight on demand."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.answered = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived.set()
        await self.release.wait()
        self.answered += 1
        return web.Response(text="ok")


@pytest.fixture
async def slow_receiver() -> AsyncIterator[tuple[SlowReceiver, str]]:
    receiver = SlowReceiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield receiver, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        receiver.release.set()
        await runner.cleanup()


async def _log_line(process: asyncio.subprocess.Process, marker: bytes) -> None:
    assert process.stderr is not None
    while marker not in (line := await process.stderr.readline()):
        assert line, "bellhook exited before logging " + marker.decode()


async def test_sigterm_finishes_in_flight_deliveries(
    database_url: str, tmp_path: Path, slow_receiver: tuple[SlowReceiver, str]
) -> None:
    receiver, url = slow_receiver
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BELLHOOK_")}
    env.update(
        BELLHOOK_DATABASE_URL=database_url,
        BELLHOOK_RETRY_SCHEDULE="60",
        BELLHOOK_SHUTDOWN_GRACE="20",
    )
    token = (await run_cli(env, "keys", "create", "--owner", "ops", "--admin")).splitlines()[-1]
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bellhook",
        "serve",
        "--dev",
        "--port",
        str(port),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("bellhook did not start")
            created = await client.post("/api/webhooks", json={"url": url, "events": ["*"]})
            assert created.status_code == 201
            accepted = await client.post(
                "/api/events",
                json={"event": "post.created", "data": {"id": "p1"}, "id": "in-flight"},
            )
            assert accepted.status_code == 202

        await asyncio.wait_for(receiver.arrived.wait(), 20)
        server.send_signal(signal.SIGTERM)
        # Answer only once the dispatcher is draining: the delivery is recorded as a
        # success below only if bellhook waited for it instead of dropping it.
        await asyncio.wait_for(_log_line(server, b"dispatcher.draining"), 20)
        receiver.release.set()
        # uvicorn re-raises the signal once its graceful shutdown is done.
        assert await asyncio.wait_for(server.wait(), 30) in (0, -signal.SIGTERM)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()

    assert receiver.answered == 1
    async with open_runtime(Settings(database_url=database_url)) as rt:
        counts = await rt.deliveries.counts()
    assert counts == {"succeeded": 1}
