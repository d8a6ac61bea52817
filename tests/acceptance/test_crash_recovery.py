"""Crash safety: a server killed with SIGKILL mid-delivery loses nothing.

A real ``python -m bellhook serve`` process delivers to two receivers in this test
that hold every request open. While deliveries are in flight (and more are still
queued) the process is killed with SIGKILL; a new process on the same database must
then deliver every event to every receiver at least once: the queued ones at once,
the in-flight ones when their claim lease (2 x timeout + 5 s) runs out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.support import (
    Hit,
    Receiver,
    create_webhook,
    deliveries,
    eventually,
    publish,
    receiver_pool,
)

EVENTS = 30
pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One ``bellhook serve`` subprocess, its output in a log file."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env = env
        self.port = port
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bellhook", "serve", "--dev", "--port", str(self.port),
                env=self.env, stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
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

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no drain, no flush."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            await self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


async def create_admin_key(env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bellhook", "keys", "create", "--owner", "ops", "--admin",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip().splitlines()[-1].strip()


async def test_sigkill_mid_delivery_loses_nothing(database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BELLHOOK_")}
    env.update(
        BELLHOOK_DATABASE_URL=database_url,
        BELLHOOK_RETRY_SCHEDULE="0.2,0.2,0.2",
        BELLHOOK_DELIVERY_TIMEOUT="1",
    )
    token = await create_admin_key(env)
    assert token

    killed = asyncio.Event()
    killed_at = float("inf")

    async def hold_until_killed(rx: Receiver, request: web.Request, hit: Hit) -> Any:
        if not killed.is_set():
            await killed.wait()  # in flight when the server dies; the answer goes nowhere
            return web.Response(text="too late")
        return web.Response(text="ok")

    def delivered(hits: list[Hit]) -> set[tuple[str, str]]:
        """(receiver, event) pairs answered 200: those that arrived after the kill."""
        return {(h.path, h.event_id) for h in hits if h.at > killed_at}

    first = Server(env, free_port(), tmp_path / "first.log")
    second = Server(env, free_port(), tmp_path / "second.log")
    async with receiver_pool() as start:
        rx_a = await start(hold_until_killed)
        rx_b = await start(hold_until_killed)
        try:
            await first.start()
            async with httpx.AsyncClient(
                base_url=first.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as api:
                hook_a = await create_webhook(api, rx_a.url("/a"))
                hook_b = await create_webhook(api, rx_b.url("/b"))
                published = []
                for n in range(EVENTS):
                    accepted = await publish(api, "post.created", {"n": n})
                    assert accepted["deliveries"] == 2
                    published.append(accepted["id"])
                # Deliveries are in flight at both receivers (held open): kill now.
                await rx_a.wait_for_count(3, timeout=30)
                await rx_b.wait_for_count(3, timeout=30)
                await first.kill()
            killed_at = time.monotonic()
            killed.set()
            held = {(h.path, h.event_id) for h in rx_a.hits + rx_b.hits}
            assert {path for path, _ in held} == {"/a", "/b"}
            # Some were still queued, not yet sent, at the kill.
            assert len(held) < 2 * EVENTS

            await second.start()
            for rx, path in ((rx_a, "/a"), (rx_b, "/b")):
                expected = {(path, e) for e in published}
                await rx.wait_until(
                    lambda hits, expected=expected: expected <= delivered(hits),
                    timeout=60,
                    what=f"every event at {path} after the restart",
                )
                assert delivered(rx.hits) == expected
            # The ones in flight at the kill were sent again, not just the queued ones.
            assert held <= delivered(rx_a.hits + rx_b.hits)

            async with httpx.AsyncClient(
                base_url=second.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as api:
                for hook in (hook_a, hook_b):
                    await eventually(
                        lambda hook=hook: deliveries(api, hook["id"], status="succeeded"),
                        lambda items: len(items) == EVENTS,
                        timeout=30,
                        what="every delivery logged as succeeded",
                    )
        except BaseException:
            print("--- first server ---\n", first.output() if first.log.exists() else "")
            print("--- second server ---\n", second.output() if second.log.exists() else "")
            raise
        finally:
            await first.kill()
            await second.stop()
