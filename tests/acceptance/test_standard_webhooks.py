"""Real deliveries verify with the official `standardwebhooks` package, with
bellhook.verify, and through a secret rotation with both the old and the new secret."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bellhook import verify
from tests.conftest import Service


@dataclass
class Capture:
    url: str
    requests: asyncio.Queue[tuple[dict[str, str], bytes]] = field(default_factory=asyncio.Queue)

    async def next(self) -> tuple[dict[str, str], bytes]:
        return await asyncio.wait_for(self.requests.get(), 20)


@pytest.fixture
async def capture() -> AsyncIterator[Capture]:
    holder: list[Capture] = []

    async def hook(request: web.Request) -> web.Response:
        holder[0].requests.put_nowait((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    holder.append(Capture(f"http://127.0.0.1:{runner.addresses[0][1]}/hook"))
    try:
        yield holder[0]
    finally:
        await runner.cleanup()


async def _publish(client: Any, event_id: str) -> None:
    response = await client.post(
        "/api/events",
        json={
            "event": "comment.created",
            "id": event_id,
            "data": {"id": "c1", "content": "Très bien 👍", "score": 2.5},
        },
    )
    assert response.status_code == 202, response.text


async def test_deliveries_verify_with_standardwebhooks_through_a_rotation(
    serve: Callable[..., Any], capture: Capture
) -> None:
    svc: Service = await serve(worker=True, dev_mode=True)
    token = await svc.new_key("backend", admin=True)
    async with svc.client(token) as client:
        created = (
            await client.post("/api/webhooks", json={"url": capture.url, "events": ["*"]})
        ).json()["data"]
        webhook_id, old_secret = created["id"], created["secret"]
        assert old_secret.startswith("whsec_")

        await _publish(client, "before-rotation")
        headers, body = await capture.next()
        assert Webhook(old_secret).verify(body, headers)["id"] == "before-rotation"
        verify.verify_signature(body, headers["X-Webhook-Signature"], old_secret)
        verify.verify_standard(body, headers, old_secret)
        assert "X-Webhook-Signature-Previous" not in headers

        rotated = await client.post(
            f"/api/webhooks/{webhook_id}/secret/rotate", json={"graceSeconds": 3600}
        )
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["data"]["secret"]
        assert new_secret.startswith("whsec_") and new_secret != old_secret
        assert rotated.json()["data"]["previousSecretExpiresAt"].endswith("Z")

        await _publish(client, "during-grace")
        headers, body = await capture.next()
        # Both secrets verify while the grace period lasts.
        assert Webhook(new_secret).verify(body, headers)["id"] == "during-grace"
        assert Webhook(old_secret).verify(body, headers)["id"] == "during-grace"
        assert len(headers["webhook-signature"].split(" ")) == 2
        verify.verify_signature(body, headers["X-Webhook-Signature"], new_secret)
        verify.verify_signature(body, headers["X-Webhook-Signature-Previous"], old_secret)

        # Without a grace period only the new secret signs.
        newest = (
            await client.post(f"/api/webhooks/{webhook_id}/secret/rotate", json={"graceSeconds": 0})
        ).json()["data"]["secret"]
        await _publish(client, "after-grace")
        headers, body = await capture.next()
        assert Webhook(newest).verify(body, headers)["id"] == "after-grace"
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret).verify(body, headers)
        assert "X-Webhook-Signature-Previous" not in headers
        secret = (await client.get(f"/api/webhooks/{webhook_id}/secret")).json()["data"]
        assert secret["secret"] == newest


async def test_a_tampered_delivery_fails_standard_verification(
    serve: Callable[..., Any], capture: Capture
) -> None:
    svc: Service = await serve(worker=True, dev_mode=True)
    token = await svc.new_key("backend", admin=True)
    async with svc.client(token) as client:
        secret = (
            await client.post("/api/webhooks", json={"url": capture.url, "events": ["*"]})
        ).json()["data"]["secret"]
        await _publish(client, "tamper-me")
        headers, body = await capture.next()
        altered = body.replace(b"c1", b"c2")
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(altered, headers)
        with pytest.raises(verify.InvalidSignature):
            verify.verify_signature(altered, headers["X-Webhook-Signature"], secret)
