"""The guide's Express receiver, run verbatim, accepts every genuine delivery and
rejects a tampered one (issue: signatures and payload bytes)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import ClientSession, web

from bellhook.domain.catalog import CATALOG
from tests.conftest import Service

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
GUIDE = Path(__file__).resolve().parents[3] / "shared" / "seed" / "webhooks-guide.txt"
SECRET = "your-webhook-secret-0123456789"


def _normalized(code: str) -> list[str]:
    return [line.strip() for line in code.splitlines() if line.strip()]


def test_receiver_embeds_the_guide_code_verbatim() -> None:
    if not GUIDE.exists():
        pytest.skip(f"the guide is not beside this checkout ({GUIDE})")
    guide = _normalized(GUIDE.read_text())
    script = (NODE_DIR / "guide-receiver.js").read_text()
    blocks = re.findall(r"// --- GUIDE BEGIN[^\n]*\n(.*?)// --- GUIDE END", script, re.S)
    assert len(blocks) == 2
    for block in blocks:
        lines = _normalized(block)
        starts = [i for i, line in enumerate(guide) if line == lines[0]]
        assert any(guide[i : i + len(lines)] == lines for i in starts), lines[0]


class NodeReceiver:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}/webhook"
        self.port = port
        self.answers: dict[str, list[int]] = {}

    async def wait_for_answers(self, count: int, timeout: float = 30) -> None:
        """Read the receiver's '<status> <event id>' lines until ``count`` have come."""

        async def read() -> None:
            assert self.process.stdout is not None
            while sum(len(v) for v in self.answers.values()) < count:
                line = (await self.process.stdout.readline()).decode().strip()
                if not line:
                    raise AssertionError("the Node receiver exited")
                status, event_id = line.split(" ", 1)
                self.answers.setdefault(event_id, []).append(int(status))

        await asyncio.wait_for(read(), timeout)

    async def received(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{self.port}/received")
        result: list[dict[str, Any]] = response.json()
        return result


@pytest.fixture
async def node_receiver() -> AsyncIterator[NodeReceiver]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the guide's receiver cannot run")
    if not (NODE_DIR / "node_modules" / "express").exists():
        pytest.fail("express is not installed: run `make test` (it runs npm ci in tests/node)")
    process = await asyncio.create_subprocess_exec(
        node,
        "guide-receiver.js",
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "WEBHOOK_SECRET": SECRET},
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 20)
        match = re.match(rb"listening (\d+)", first)
        assert match, first
        yield NodeReceiver(process, int(match.group(1)))
    finally:
        process.kill()
        await process.wait()


def sample_data(name: str) -> dict[str, Any]:
    """The catalog example plus the shapes that trip naive JSON code."""
    return {
        **dict(CATALOG[name].example),
        "content": "Hello, Bellamy Book! 🎉 naïve café 日本語 \u2028 \u0007 \ud83d",
        "score": 1.0,
        "ratio": 0.1,
        "big": 1e21,
        "tiny": 5e-324,
        "negativeZero": -0.0,
        "count": 9007199254740991,
        "10": "integer-like key",
        "2": "sorted first in JavaScript",
        "nested": {"deep": [{"a": [1.5, {"b": None, "c": True}]}], "empty": {}, "list": []},
    }


async def _publish(
    client: httpx.AsyncClient, name: str, data: dict[str, Any], event_id: str
) -> None:
    # json.dumps with ensure_ascii keeps the lone surrogate as an escape.
    response = await client.post(
        "/api/events",
        content=json.dumps({"event": name, "data": data, "id": event_id}),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["data"]["deliveries"] >= 1


async def _eventually(check: Callable[[], Any], timeout: float = 20) -> Any:
    """Poll ``check`` (an async callable returning a truthy value when done)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_guide_handler_accepts_every_genuine_delivery(
    serve: Callable[..., Any], node_receiver: NodeReceiver
) -> None:
    svc: Service = await serve(worker=True, dev_mode=True, retry_schedule="60")
    token = await svc.new_key("backend", admin=True)
    async with svc.client(token) as client:
        created = await client.post(
            "/api/webhooks", json={"url": node_receiver.url, "events": ["*"], "secret": SECRET}
        )
        assert created.status_code == 201, created.text
        sent = {}
        for name in CATALOG:
            data = sample_data(name)
            event_id = f"guide-{name}"
            sent[event_id] = (name, json.loads(json.dumps(data)))
            await _publish(client, name, data, event_id)

        await node_receiver.wait_for_answers(len(CATALOG))
        assert node_receiver.answers == {event_id: [200] for event_id in sent}

        received = {p["id"]: p for p in await node_receiver.received()}
        assert set(received) == set(sent)
        for event_id, (name, data) in sent.items():
            payload = received[event_id]
            assert list(payload) == ["id", "event", "timestamp", "data", "signature"]
            assert payload["event"] == name
            assert payload["timestamp"].endswith("Z")
            # JavaScript's view of the same data (-0 becomes 0, 1.0 becomes 1).
            assert payload["data"] == data

        webhook_id = created.json()["data"]["id"]

        async def all_succeeded() -> bool:
            page = (await client.get(f"/api/webhooks/{webhook_id}/deliveries")).json()["data"]
            return len(page) == len(CATALOG) and all(
                d["status"] == "succeeded" and d["lastStatusCode"] == 200 for d in page
            )

        await _eventually(all_succeeded)


@pytest.fixture
async def tampering_proxy(node_receiver: NodeReceiver) -> AsyncIterator[str]:
    """Forwards deliveries to the Node receiver with one byte of the body changed."""

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        altered = body.replace(b"Hello", b"Hellp", 1)
        assert altered != body
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with (
            ClientSession() as session,
            session.post(node_receiver.url, data=altered, headers=headers) as response,
        ):
            return web.Response(status=response.status, body=await response.read())

    app = web.Application()
    app.router.add_post("/webhook", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/webhook"
    finally:
        await runner.cleanup()


async def test_guide_handler_rejects_a_delivery_altered_in_flight(
    serve: Callable[..., Any], node_receiver: NodeReceiver, tampering_proxy: str
) -> None:
    svc: Service = await serve(worker=True, dev_mode=True, retry_schedule="60")
    token = await svc.new_key("backend", admin=True)
    async with svc.client(token) as client:
        created = await client.post(
            "/api/webhooks",
            json={"url": tampering_proxy, "events": ["post.created"], "secret": SECRET},
        )
        assert created.status_code == 201
        webhook_id = created.json()["data"]["id"]
        await _publish(client, "post.created", sample_data("post.created"), "tampered-1")

        await node_receiver.wait_for_answers(1)
        assert node_receiver.answers == {"tampered-1": [401]}
        assert await node_receiver.received() == []

        async def attempt_logged() -> list[Any]:
            page = (await client.get(f"/api/webhooks/{webhook_id}/deliveries")).json()["data"]
            return [d for d in page if d["lastStatusCode"] == 401]

        (delivery,) = await _eventually(attempt_logged)
        assert delivery["status"] == "pending"  # a retry is scheduled
        detail = (
            await client.get(f"/api/webhooks/{webhook_id}/deliveries/{delivery['id']}")
        ).json()["data"]
        assert detail["attempts"][0]["error"] == "http_status"
        assert detail["attempts"][0]["responseBody"] == "Invalid signature"
