"""SIGTERM: bellhook takes no new work, finishes the deliveries in flight, then exits."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web

from bellhook.config import Settings
from bellhook.delivery.dispatcher import running_dispatcher
from bellhook.errors import StorageUnavailable
from bellhook.runtime import open_runtime, utc_now
from bellhook.store.events import NewEvent
from tests.support import Receiver, Server, admin_webhook, bellhook_env, create_admin_key


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


async def test_sigterm_finishes_in_flight_deliveries(
    database_url: str, tmp_path: Path, slow_receiver: tuple[SlowReceiver, str]
) -> None:
    receiver, url = slow_receiver
    env = bellhook_env(
        BELLHOOK_DATABASE_URL=database_url,
        BELLHOOK_RETRY_SCHEDULE="60",
        BELLHOOK_SHUTDOWN_GRACE="20",
    )
    token = await create_admin_key(env)
    server = Server(env, tmp_path / "serve.log")
    try:
        await server.start()
        async with httpx.AsyncClient(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            created = await client.post("/api/webhooks", json={"url": url, "events": ["*"]})
            assert created.status_code == 201
            accepted = await client.post(
                "/api/events",
                json={"event": "post.created", "data": {"id": "p1"}, "id": "in-flight"},
            )
            assert accepted.status_code == 202

        await asyncio.wait_for(receiver.arrived.wait(), 20)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        # Answer only once the dispatcher is draining: the delivery is recorded as a
        # success below only if bellhook waited for it instead of dropping it.
        await server.wait_for_output("dispatcher.draining")
        receiver.release.set()
        # uvicorn re-raises the signal once its graceful shutdown is done.
        assert await asyncio.wait_for(server.wait(), 30) in (0, -signal.SIGTERM)
    finally:
        await server.kill()

    assert receiver.answered == 1
    async with open_runtime(Settings(database_url=database_url)) as rt:
        counts = await rt.deliveries.counts()
    assert counts == {"succeeded": 1}


async def test_stop_gives_up_on_outcomes_the_database_keeps_refusing(
    make_settings: Callable[..., Settings],
    receivers: Callable[..., Awaitable[Receiver]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopping waits a grace period for outcomes to be written, not forever; the
    delivery stays pending in the queue (its lease brings it back), never lost."""
    rx = await receivers()
    settings = make_settings(dev_mode=True, shutdown_grace=0.3, poll_interval=0.05)
    now = utc_now()
    async with open_runtime(settings) as rt:
        hook = await admin_webhook(rt, now, rx.url())

        async def refuse(*_args: Any, **_kwargs: Any) -> list[str]:
            raise StorageUnavailable("the database is unavailable, try again shortly")

        monkeypatch.setattr(rt.deliveries, "record", refuse)
        with structlog.testing.capture_logs() as logs:
            async with running_dispatcher(rt):
                await rt.events.ingest(
                    [NewEvent("evt_unsaved", "post.created", "{}", now, None)], now=now
                )
                (hit,) = await rx.wait_for_count(1)
            # Leaving the block returned: the dispatcher stopped.
        assert hit.event_id == "evt_unsaved"
        events = [entry["event"] for entry in logs]
        assert "database.unavailable" in events
        assert "dispatcher.outcomes_unsaved" in events
        monkeypatch.undo()
        assert await rt.deliveries.counts() == {"pending": 1}
        page = await rt.deliveries.page(
            hook.id, status=None, event_type=None, limit=10, cursor=None
        )
        assert [d.event_id for d in page.items] == ["evt_unsaved"]
