"""Crash safety: a server killed with SIGKILL mid-delivery loses nothing.

A real ``python -m bellhook serve`` process delivers to two receivers in this test
that hold every request open. While deliveries are in flight (and more are still
queued) the process is killed with SIGKILL; a new process on the same database must
then deliver every event to every receiver at least once: the queued ones at once,
the in-flight ones when their claim lease (2 x timeout + 5 s) runs out.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.support import (
    Hit,
    Receiver,
    Server,
    bellhook_env,
    create_admin_key,
    create_webhook,
    deliveries,
    eventually,
    publish,
    receiver_pool,
)

EVENTS = 30
pytestmark = pytest.mark.timeout(180)


async def test_sigkill_mid_delivery_loses_nothing(database_url: str, tmp_path: Path) -> None:
    env = bellhook_env(
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

    first = Server(env, tmp_path / "first.log")
    second = Server(env, tmp_path / "second.log")
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
