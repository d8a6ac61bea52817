"""``bellhook demo``: a verified webhook within a minute of cloning.

Everything in this process, on loopback, on a temporary SQLite database: bellhook in
dev mode, a receiver, an admin key, two webhooks (one for every event, one for
``post.created`` whose receiver fails its first attempt), one event of each catalog
type published through ``bellhook.Client``, and each delivery shown as it arrives with
both signatures checked by ``bellhook.verify`` (through ``listen.check_delivery``).
The failing one is shown being retried. Then it keeps running for the visitor to try
the API, until Ctrl-C, or exits at once with ``--once``; the temporary files go with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from aiohttp import web
from rich.console import Console
from rich.markup import escape

from bellhook.config import Settings
from bellhook.domain.catalog import CATALOG
from bellhook.errors import BellhookError, ConfigurationError
from bellhook.listen import check_delivery

SECRET = "whsec_demo_0123456789abcdefghij"  # noqa: S105 (a demo's, printed on purpose)
RETRY_AFTER = 2.0  # seconds before the failed attempt is retried
FLAKY = "post.created"  # the event type whose second webhook fails once


@dataclass
class Seen:
    """What the receiver saw, for the summary (and ``--once``'s exit)."""

    verified: dict[tuple[str, str], str] = field(default_factory=dict)  # (path, id): type
    refused: int = 0
    failed_once: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = len(CATALOG) + 1  # one of each type, and the flaky webhook's success


class DemoReceiver:
    """``/all`` answers 200; ``/flaky`` answers 503 once, then 200. Both verify first."""

    def __init__(self, out: Console, seen: Seen) -> None:
        self.out = out
        self.seen = seen

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{name}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        verdict = check_delivery(body, request.headers, [SECRET])
        event = request.headers.get("X-Webhook-Event", "?")
        event_id = request.headers.get("X-Webhook-Id", "?")
        attempt = request.headers.get("X-Webhook-Attempt", "?")
        where = request.path
        if verdict.error is not None:
            self.seen.refused += 1
            self.out.print(f"[red]✗ {escape(where)} refused: {escape(verdict.error)}[/red]")
            return web.json_response({"ok": False}, status=401)
        schemes = " + ".join(verdict.verified)
        if where == "/flaky" and not self.seen.failed_once:
            self.seen.failed_once = True
            self.out.print(
                f"[yellow]✗ {where:7} {event:24} attempt {attempt}  verified ({schemes}); "
                f"answering 503: bellhook retries in {RETRY_AFTER:.0f} s[/yellow]"
            )
            return web.json_response({"ok": False}, status=503)
        self.seen.verified[where, event_id] = event
        note = "  (the retry)" if where == "/flaky" else ""
        self.out.print(
            f"[green]✓ {where:7} {event:24} attempt {attempt}  verified ({schemes}) "
            f"→ 200{note}[/green]"
        )
        if len(self.seen.verified) >= self.seen.expected:
            self.seen.done.set()
        return web.json_response({"ok": True})


@contextlib.asynccontextmanager
async def running_receiver(receiver: DemoReceiver) -> AsyncIterator[str]:
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_bellhook(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """bellhook on a free loopback port; yields its URL and an admin key."""
    from bellhook.api.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=settings.port, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    # The demo's own SIGINT and SIGTERM handlers stop it in order (run_demo), rather
    # than uvicorn's stopping the server under it.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    # The socket first, so that a port in use is a clear error, not uvicorn's exit.
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listening.bind(("127.0.0.1", settings.port))
    except OSError as exc:
        listening.close()
        raise ConfigurationError(
            f"cannot serve the demo on 127.0.0.1:{settings.port}: {exc.strerror or exc}"
        ) from exc
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        while not server.started:
            if task.done():
                task.result()  # the start-up error
                raise BellhookError("bellhook stopped while starting")
            await asyncio.sleep(0.02)  # uvicorn has no event for "started"
        port = server.servers[0].sockets[0].getsockname()[1]
        rt = app.state.runtime
        _key, token = await rt.keys.create("demo", is_admin=True, name="demo", now=rt.clock())
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.should_exit = True
        await task
        listening.close()


async def run_demo(out: Console, *, once: bool, port: int, wait_up_to: float) -> int:
    """The demo; 0 when every delivery arrived verified (and, without ``once``, after
    Ctrl-C), 1 otherwise."""
    from bellhook.client import Client

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    seen = Seen()
    with tempfile.TemporaryDirectory(prefix="bellhook-demo-") as tmp:
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'demo.db'}",
            port=port,
            dev_mode=True,  # http:// and loopback receivers
            retry_schedule=(RETRY_AFTER, 5.0, 10.0),
            retry_jitter=0,
            poll_interval=0.1,
            log_level="warning",
        )
        async with (
            running_receiver(DemoReceiver(out, seen)) as receiver_url,
            running_bellhook(settings) as (url, key),
            Client(url, key) as client,
        ):
            out.print(f"[bold]bellhook[/bold] (dev mode) on {url}, database {tmp}/demo.db")
            out.print(f"receiver on {receiver_url}, verifying with secret {SECRET}")
            everything = await client.create_webhook(
                f"{receiver_url}/all", ["*"], secret=SECRET, description="every event"
            )
            flaky = await client.create_webhook(
                f"{receiver_url}/flaky", [FLAKY], secret=SECRET, description="fails once"
            )
            out.print(f"webhooks {everything.id} (every event) and {flaky.id} ({FLAKY})")
            out.print(f"publishing one event of each of the {len(CATALOG)} types…\n")
            scheduled = 0
            for event_type in CATALOG.values():
                accepted = await client.publish(
                    event_type.name, dict(event_type.example), audience="*"
                )
                scheduled += accepted.deliveries
            finished = asyncio.ensure_future(seen.done.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait(
                {finished, stopped}, timeout=wait_up_to, return_when="FIRST_COMPLETED"
            )
            finished.cancel()
            complete = seen.done.is_set()
            if complete:
                types = len({t for (path, _), t in seen.verified.items() if path == "/all"})
                out.print(
                    f"\n[bold green]{scheduled} deliveries: {types} event types delivered and "
                    "verified with both signature schemes; the failed attempt was retried "
                    "and succeeded.[/bold green]"
                )
            elif not stop.is_set():
                out.print(f"[red]not every delivery arrived within {wait_up_to:.0f} s[/red]")
            if complete and not once and not stop.is_set():
                out.print(
                    f"\nTry it: curl -H 'Authorization: Bearer {key}' {url}/api/webhooks\n"
                    f"API docs at {url}/docs. Ctrl-C stops the demo and removes its files."
                )
                await stopped
            stopped.cancel()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    out.print("demo stopped; its temporary database is removed")
    return 0 if complete and not seen.refused else 1
