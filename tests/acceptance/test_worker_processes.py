"""``bellhook worker --processes 2``: two delivery processes on one database.

Real subprocesses: ``serve --no-worker`` takes the events, a two-process worker
delivers them to a receiver on loopback; each event arrives once, both processes
stop together on SIGTERM, and the death of one stops the other.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    Server,
    bellhook_env,
    create_admin_key,
    create_webhook,
    deliveries,
    eventually,
    publish,
    receiver_pool,
)

EVENTS = 40
pytestmark = pytest.mark.timeout(120)


def log_lines(server: Server, event: str) -> list[dict[str, Any]]:
    lines = []
    for line in server.output().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                lines.append(record)
    return lines


async def start_pair(database_url: str, tmp_path: Path) -> tuple[Server, Server, str]:
    env = bellhook_env(
        BELLHOOK_DATABASE_URL=database_url,
        BELLHOOK_WORKER="false",
        BELLHOOK_LOG_FORMAT="json",
        BELLHOOK_PER_WEBHOOK_CONCURRENCY="8",
    )
    token = await create_admin_key(env)
    api_server = Server(env, tmp_path / "serve.log")
    worker = Server(env, tmp_path / "worker.log", worker=["--processes", "2"])
    await api_server.start()
    await worker.start()
    await worker.wait_for_output("worker.processes_started")
    return api_server, worker, token


async def test_two_processes_deliver_each_event_once_and_stop_together(
    database_url: str, tmp_path: Path
) -> None:
    api_server, worker, token = await start_pair(database_url, tmp_path)
    try:
        async with (
            receiver_pool() as start,
            httpx.AsyncClient(
                base_url=api_server.base_url, headers={"Authorization": f"Bearer {token}"}
            ) as api,
        ):
            rx = await start()
            hook = await create_webhook(api, rx.url())
            ids = [f"evt_processes_{i}" for i in range(EVENTS)]
            for event_id in ids:
                await publish(api, id=event_id)
            hits = await rx.wait_for_count(EVENTS)
            succeeded = await eventually(
                lambda: deliveries(api, hook["id"], status="succeeded"),
                lambda items: len(items) == EVENTS,
                what=f"{EVENTS} succeeded deliveries",
            )
            assert sorted(d["eventId"] for d in succeeded) == sorted(ids)
            assert sorted(h.event_id for h in hits) == sorted(ids)  # none twice

        (started,) = log_lines(worker, "worker.processes_started")
        assert started["processes"] == 2
        # The limits are split: each process takes its half of per-webhook concurrency.
        assert started["per_webhook_each"] == [4, 4]
        assert len(log_lines(worker, "dispatcher.started")) == 2
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        assert await worker.wait() == 0
        assert len(log_lines(worker, "dispatcher.stopped")) == 2
        for pid in started["pids"]:
            assert not Path(f"/proc/{pid}").exists()  # reaped, not left behind
    finally:
        await worker.stop()
        await api_server.stop()


async def test_a_limit_that_cannot_be_split_is_refused(database_url: str) -> None:
    env = bellhook_env(BELLHOOK_DATABASE_URL=database_url, BELLHOOK_PER_WEBHOOK_CONCURRENCY="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bellhook", "worker", "--processes", "2",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "cannot be split between 2 worker processes" in err.decode()


async def test_when_one_process_dies_the_worker_stops_and_fails(
    database_url: str, tmp_path: Path
) -> None:
    api_server, worker, _token = await start_pair(database_url, tmp_path)
    try:
        (started,) = log_lines(worker, "worker.processes_started")
        victim, survivor = started["pids"]
        await worker.wait_for_output("dispatcher.started")
        os.kill(victim, signal.SIGKILL)
        assert await worker.wait() == 1  # the process manager sees the failure
        (exited,) = log_lines(worker, "worker.process_exited")
        assert exited["pid"] == victim
        assert exited["status"] == -signal.SIGKILL
        assert not Path(f"/proc/{survivor}").exists()
    finally:
        await worker.stop()
        await api_server.stop()
