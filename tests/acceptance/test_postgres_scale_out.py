"""Scale-out on the machine's real PostgreSQL: API and worker processes apart.

Real subprocesses (``bellhook serve --no-worker`` and ``bellhook worker``), real
receivers on loopback: many workers share the queue and no delivery is sent by two at
once; a killed worker's work is finished by the others; every bellhook connection
terminated, and PostgreSQL restarted, while events flow: nothing acknowledged is lost
and no process is restarted by hand; a dead receiver's backlog of retries never holds
back a healthy webhook's first attempts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from aiohttp import web
from sqlalchemy import select

from bellhook.config import Settings
from bellhook.runtime import open_runtime, utc_now
from bellhook.store.tables import attempts, deliveries
from tests.postgres import (
    allow_connections,
    bellhook_connections,
    needs_postgres,
    postgres_url,
    restart_postgres,
    terminate_bellhook_connections,
)
from tests.support import (
    Hit,
    Receiver,
    Server,
    bellhook_env,
    create_admin_key,
    create_webhook,
    error_of,
    eventually,
    ok_data,
    receiver_pool,
)

pytestmark = [needs_postgres, pytest.mark.timeout(300)]


def environment(database_url: str, **variables: str) -> dict[str, str]:
    return bellhook_env(
        BELLHOOK_DATABASE_URL=database_url,
        BELLHOOK_WORKER="false",
        BELLHOOK_LOG_FORMAT="json",
        **variables,
    )


async def timed_out_events(database_url: str) -> set[str]:
    """Events one of whose attempts timed out (sent again, rightly, at least once)."""
    async with open_runtime(Settings(database_url=database_url)) as rt, rt.db.read() as conn:
        rows = await conn.execute(
            select(deliveries.c.event_id)
            .join(attempts, attempts.c.delivery_id == deliveries.c.id)
            .where(attempts.c.error_kind == "timeout")
        )
        return set(rows.scalars())


async def owner_keys(database_url: str, owners: list[str]) -> list[str]:
    """A key for each owner, made in this process (a subprocess each takes seconds)."""
    async with open_runtime(Settings(database_url=database_url)) as rt:
        return [
            (await rt.keys.create(owner, is_admin=False, name=None, now=utc_now()))[1]
            for owner in owners
        ]


def api(base_url: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def log_events(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.output_lines() if line.startswith("{")]


class OnePerDelivery:
    """A responder that counts, per delivery (path and event id), the requests being
    answered at the same moment (two workers holding one delivery would show as 2), and
    notes the client port each request came from (which process sent it)."""

    def __init__(self) -> None:
        self.active: Counter[tuple[str, str]] = Counter()
        self.most = 0
        self.port_of: dict[int, int] = {}  # hit.seq -> the sender's local port

    async def __call__(self, _rx: Receiver, request: web.Request, hit: Hit) -> web.Response:
        assert request.transport is not None
        self.port_of[hit.seq] = request.transport.get_extra_info("peername")[1]
        key = (hit.path, hit.event_id)
        self.active[key] += 1
        self.most = max(self.most, self.active[key])
        try:
            await asyncio.sleep(0.005)  # a receiver's own work, so that sends can overlap
            return web.Response(text="ok")
        finally:
            self.active[key] -= 1


async def test_three_workers_share_the_queue_and_finish_a_killed_workers_work(
    database_url: str, tmp_path: Path
) -> None:
    webhooks, events = 20, 5000
    # A lease of 25 s: the receiver (in this test's loop, on a busy machine) may take
    # seconds to answer, and an attempt that timed out is sent again, rightly.
    env = environment(database_url, BELLHOOK_DELIVERY_TIMEOUT="10")
    admin = await create_admin_key(env)
    owners = [f"owner_{i}" for i in range(webhooks)]
    keys = await owner_keys(database_url, owners)
    api_server = Server(env, tmp_path / "serve.log")
    workers = [Server(env, tmp_path / f"worker{i}.log", worker=[]) for i in range(3)]
    responder = OnePerDelivery()
    try:
        await api_server.start()
        async with receiver_pool() as start:
            rx = await start(responder)
            for i, key in enumerate(keys):
                async with api(api_server.base_url, key) as client:
                    await create_webhook(client, rx.url(f"/hook{i}"))
            for worker in workers:
                await worker.start()
            async with api(api_server.base_url, admin) as client:
                for first in range(0, events, 1000):
                    batch = [
                        {
                            "id": f"evt_scale_{n}",
                            "event": "post.created",
                            "data": {"n": n},
                            "audience": [owners[n % webhooks]],
                        }
                        for n in range(first, first + 1000)
                    ]
                    accepted = ok_data(
                        await client.post("/api/events/batch", json={"events": batch}), 202
                    )
                    assert accepted["accepted"] == 1000

            await rx.wait_for_count(events // 5, timeout=60)
            # Stopped first, so that it opens no connection between the count and the kill.
            victim = workers[0].proc
            assert victim is not None
            victim.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()  # the clock of Hit.at
            victims_ports = {
                c.laddr.port for c in psutil.Process(victim.pid).net_connections(kind="tcp")
            }
            await workers[0].kill()

            def all_arrived(hits: list[Hit]) -> bool:
                return len({(h.path, h.event_id) for h in hits}) >= events

            hits = await rx.wait_until(all_arrived, timeout=120, what="every delivery")
        expected = {(f"/hook{n % webhooks}", f"evt_scale_{n}") for n in range(events)}
        assert {(h.path, h.event_id) for h in hits} == expected
        assert responder.most == 1  # never two requests for one delivery at once
        # A delivery sent twice is one the killed worker sent without recording it:
        # the live workers never took a delivery another one held.
        firsts: dict[tuple[str, str], int] = {}
        for h in hits:
            firsts.setdefault((h.path, h.event_id), h.seq)
        again = [h for h in hits if firsts[(h.path, h.event_id)] != h.seq]
        timed_out = await timed_out_events(database_url)
        by_others = [
            h
            for h in again
            if responder.port_of[firsts[(h.path, h.event_id)]] not in victims_ports
            and h.event_id not in timed_out  # its first attempt timed out: a retry
        ]
        assert by_others == []
        # Resent by the others, once the killed worker's leases ran out (by time: its
        # port numbers are free for the others' new connections once it is gone).
        assert [h for h in again if h.at < stopped_at and h.event_id not in timed_out] == []
        assert workers[1].proc is not None and workers[1].proc.returncode is None
        assert workers[2].proc is not None and workers[2].proc.returncode is None
    finally:
        for server in (*workers, api_server):
            await server.stop()


class Publisher:
    """Publishes events one at a time, as a client would: an answer 503 (the database is
    away) is tried again, anything else but 202 is recorded as wrong."""

    def __init__(self, client: httpx.AsyncClient, total: int) -> None:
        self.client = client
        self.total = total
        self.acknowledged: list[str] = []
        self.unavailable: list[dict[str, Any]] = []
        self.wrong: list[tuple[int, str]] = []
        self.progress = asyncio.Condition()

    async def run(self) -> None:
        for n in range(self.total):
            event_id = f"evt_fault_{n}"
            while True:
                resp = await self.client.post(
                    "/api/events", json={"id": event_id, "event": "post.created", "data": {}}
                )
                if resp.status_code == 202:
                    break
                if resp.status_code == 503:
                    self.unavailable.append(resp.json())
                    await asyncio.sleep(0.05)  # a client's pause before trying again
                    continue
                self.wrong.append((resp.status_code, resp.text))
                break
            async with self.progress:
                self.acknowledged.append(event_id)
                self.progress.notify_all()

    async def reached(self, n: int) -> None:
        async with self.progress:
            await asyncio.wait_for(self.progress.wait_for(lambda: len(self.acknowledged) >= n), 60)


async def events_flow_through(
    database_url: str, tmp_path: Path, fault: Callable[[], Awaitable[None]]
) -> None:
    """One API process and two workers; ``fault`` strikes after a third of the events."""
    total = 600
    env = environment(database_url, BELLHOOK_POLL_INTERVAL="0.5")
    admin = await create_admin_key(env)
    api_server = Server(env, tmp_path / "serve.log")
    workers = [Server(env, tmp_path / f"worker{i}.log", worker=[]) for i in range(2)]
    try:
        await api_server.start()
        for worker in workers:
            await worker.start()
            await worker.wait_for_output("wakeups.listening")
        async with receiver_pool() as start, api(api_server.base_url, admin) as client:
            rx = await start()
            await create_webhook(client, rx.url())
            publisher = Publisher(client, total)
            publishing = asyncio.create_task(publisher.run())
            await publisher.reached(total // 3)
            await fault()
            await publishing

            def all_arrived(hits: list[Hit]) -> bool:
                return {h.event_id for h in hits} >= set(publisher.acknowledged)

            await rx.wait_until(all_arrived, timeout=90, what="every acknowledged event")
            assert publisher.wrong == []  # never a 500, nor a stack trace
            assert len(publisher.acknowledged) == total
            for body in publisher.unavailable:
                assert body["success"] is False
                assert body["error"]["code"] == "storage_unavailable", body
            # The listeners came back by themselves: new events still wake the workers.
            for worker in workers:
                await worker.wait_for_output("wakeups.listener_reconnected", timeout=30)
        for server in (api_server, *workers):
            assert server.proc is not None and server.proc.returncode is None
            output = server.output_all()
            assert "Traceback" not in output, output[-3000:]

            def said(event: str, server: Server = server) -> Counter[str]:
                return Counter(e["component"] for e in log_events(server) if e["event"] == event)

            async def both(server: Server = server) -> tuple[Counter[str], Counter[str]]:
                return said("database.unavailable", server), said("database.recovered", server)

            # Each outage said once, and its end said (an outcome write may still be in
            # its pause when the last delivery arrives: its recovery comes after).
            await eventually(both, lambda pair: pair[0] == pair[1], what="outages ended")
    finally:
        for server in (*workers, api_server):
            await server.stop()


async def test_every_connection_terminated_while_events_flow(
    database_url: str, tmp_path: Path
) -> None:
    url = postgres_url()

    async def terminate() -> None:
        names = await bellhook_connections(url)
        assert names.count("bellhook-listener") == 2  # one per worker
        assert await terminate_bellhook_connections(url) >= 3

    await events_flow_through(database_url, tmp_path, terminate)


async def test_postgres_restarted_while_events_flow(database_url: str, tmp_path: Path) -> None:
    await events_flow_through(database_url, tmp_path, restart_postgres)


async def test_a_backlog_of_retries_never_holds_back_a_healthy_webhook(
    database_url: str, tmp_path: Path
) -> None:
    """20 webhooks of one owner with 10,000 deliveries retrying against a receiver that
    answers 503, and another owner's healthy webhook: each of its events arrives while
    the backlog has moved on by a small fraction, not after the backlog's turn."""
    dead_webhooks, per_webhook, fresh = 20, 500, 20
    env = environment(
        database_url, BELLHOOK_RETRY_SCHEDULE=",".join(["0.05"] * 40), BELLHOOK_RETRY_JITTER="0"
    )
    admin = await create_admin_key(env)
    (healthy_key,) = await owner_keys(database_url, ["owner_healthy"])
    api_server = Server(env, tmp_path / "serve.log")
    worker = Server(env, tmp_path / "worker.log", worker=[])

    async def unavailable(_rx: Receiver, _request: web.Request, _hit: Hit) -> web.Response:
        return web.Response(status=503)

    try:
        await api_server.start()
        await worker.start()
        async with (
            receiver_pool() as start,
            api(api_server.base_url, admin) as ops,
            api(api_server.base_url, healthy_key) as owner,
        ):
            dead = await start(unavailable)
            healthy = await start()
            for i in range(dead_webhooks):
                await create_webhook(ops, dead.url(f"/dead{i}"), events=["comment.created"])
            await create_webhook(owner, healthy.url(), events=["post.created"])
            batch = [
                {"id": f"evt_backlog_{n}", "event": "comment.created", "data": {}}
                for n in range(per_webhook)
            ]
            ok_data(await ops.post("/api/events/batch", json={"events": batch}), 202)
            backlog = dead_webhooks * per_webhook
            # Every delivery tried once: all 10,000 are retrying from now on.
            await dead.wait_until(
                lambda hits: len({(h.path, h.event_id) for h in hits}) >= backlog,
                timeout=120,
                what="a first attempt of every backlog delivery",
            )
            moved_on = []
            for n in range(fresh):
                before = len(dead.hits)
                fresh_event = {
                    "id": f"evt_fresh_{n}",
                    "event": "post.created",
                    "data": {},
                    "audience": ["owner_healthy"],
                }
                ok_data(await ops.post("/api/events", json=fresh_event), 202)
                await healthy.wait_for_count(n + 1)
                moved_on.append(len(dead.hits) - before)
            assert [h.event_id for h in healthy.hits] == [f"evt_fresh_{n}" for n in range(fresh)]
            # Behind the backlog, each fresh event would wait for most of its 10,000 to
            # be tried again (8,000-10,000 each, when claims went by age alone); in
            # turns, for a claim or two.
            assert statistics.median(moved_on) < backlog // 10, moved_on
            assert max(moved_on) < backlog // 2, moved_on
            assert len(dead.hits) > backlog  # the backlog was retrying all along
    finally:
        await worker.stop()
        await api_server.stop()


async def test_while_the_database_is_gone_the_api_answers_503_and_healthz_readyz_say_so(
    database_url: str, tmp_path: Path
) -> None:
    """No connection accepted (every bellhook connection terminated, new ones refused):
    each call is a 503 in the error envelope, and /healthz says the database is
    unreachable; once connections are allowed again, both recover by themselves."""
    env = environment(database_url)
    admin = await create_admin_key(env)
    api_server = Server(env, tmp_path / "serve.log")
    url = postgres_url()
    try:
        await api_server.start()
        async with api(api_server.base_url, admin) as client:
            await create_webhook(client, "http://127.0.0.1:9/hook")
            await allow_connections(url, False)
            try:
                await terminate_bellhook_connections(url)
                health = error_of(await client.get("/healthz"), 503)
                assert health["code"] == "database_unreachable"
                unready = error_of(await client.get("/readyz"), 503)
                assert unready["code"] == "not_ready"
                assert "database: the database cannot be reached" in unready["message"]
                assert unready["details"][0]["checks"]["database"] != "ok"
                for call in (
                    client.get("/api/webhooks"),
                    client.post("/api/events", json={"event": "post.created", "data": {}}),
                ):
                    error = error_of(await call, 503)
                    assert error["code"] == "storage_unavailable"
                    assert "database" in error["message"]
            finally:
                await allow_connections(url, True)
            assert ok_data(await client.get("/healthz"))["database"] == "ok"
            ready = ok_data(await client.get("/readyz"))
            assert ready["status"] == "ready"
            assert ready["checks"]["database"] == ready["checks"]["migrations"] == "ok"
            ok_data(
                await client.post("/api/events", json={"event": "post.created", "data": {}}), 202
            )
        assert "Traceback" not in api_server.output_all()
    finally:
        await api_server.stop()
