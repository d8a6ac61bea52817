"""bellhook.Client and bellhook.SyncClient against a real app on loopback (no mocks):
every route, an error of each kind, paging across pages."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import bellhook
from bellhook.client import (
    ApiConnectionError,
    ApiError,
    AuthenticationError,
    Client,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    SyncClient,
    ValidationError,
)
from bellhook.store.ingest_errors import IngestError
from tests.conftest import Service
from tests.support import Deliver, Start, eventually, fail_first

Serve = Callable[..., Any]


async def settle(client: Client, webhook_id: str, event_id: str, state: str) -> str:
    """The id of the delivery of ``event_id`` once its status is ``state``."""

    async def probe() -> list[Any]:
        return [d async for d in client.list_deliveries(webhook_id) if d.event_id == event_id]

    found = await eventually(
        probe, lambda ds: len(ds) == 1 and ds[0].status == state, what=f"{event_id} {state}"
    )
    delivery_id: str = found[0].id
    return delivery_id


async def test_lazy_export_and_no_key_in_repr(service: Service) -> None:
    assert bellhook.Client is Client
    assert bellhook.SyncClient is SyncClient
    assert bellhook.ApiError is ApiError
    async with Client(service.base_url, "bh_secret_key_value") as client:
        assert "bh_secret_key_value" not in repr(client)
        assert service.base_url in repr(client)
    with pytest.raises(ValueError, match="api_key") as refused:
        Client(service.base_url, "bad key\n")
    assert "bad key" not in str(refused.value)


async def test_webhook_routes(service: Service) -> None:
    key = await service.new_key("acme")
    async with Client(service.base_url, key) as client:
        created = await client.create_webhook(
            "https://example.com/hook", ["post.created"], description="first"
        )
        assert created.id.startswith("wh_")
        assert created.secret is not None and created.secret.startswith("whsec_")
        assert (created.status, created.events, created.description) == (
            "active",
            ["post.created"],
            "first",
        )
        assert created.created_at.tzinfo is not None

        got = await client.get_webhook(created.id)
        assert got.model_dump() == created.model_dump(exclude={"secret"})

        patched = await client.update_webhook(created.id, description=None, status="disabled")
        assert (patched.description, patched.status, patched.url) == (
            None,
            "disabled",
            "https://example.com/hook",
        )
        put = await client.update_webhook(
            created.id, url="https://example.com/new", events=["post.updated"], method="PUT"
        )
        assert (put.url, put.events, put.status) == (
            "https://example.com/new",
            ["post.updated"],
            "disabled",
        )

        assert (await client.get_secret(created.id)).secret == created.secret
        rotated = await client.rotate_secret(created.id, grace_seconds=60)
        assert rotated.secret != created.secret
        assert rotated.previous_secret_expires_at is not None
        chosen = await client.rotate_secret(created.id, secret="x" * 24, grace_seconds=0)
        assert chosen.secret == "x" * 24
        assert (await client.get_secret(created.id)).secret == "x" * 24

        stats = await client.webhook_stats(created.id)
        assert stats.webhook_id == created.id
        assert stats.windows.hour.attempts == 0 and stats.windows.day.success_rate is None

        page = await client.list_webhooks_page()
        assert [w.id for w in page.items] == [created.id] and page.next_cursor is None

        await client.delete_webhook(created.id)
        assert [w async for w in client.list_webhooks()] == []
        with pytest.raises(NotFoundError):
            await client.get_webhook(created.id)


async def test_catalog_and_operations(service: Service) -> None:
    async with Client(service.base_url, await service.new_key("acme")) as client:
        types = await client.event_types()
        assert len(types) == 8
        assert "post.created" in {t.name for t in types}
        health = await client.healthz()
        assert (health.status, health.database, health.version) == (
            "ok",
            "ok",
            bellhook.__version__,
        )
        ready = await client.readyz()
        assert ready.status == "ready" and ready.checks["database"] == "ok"
        assert "bellhook_" in await client.metrics()
    async with Client(service.base_url, None) as anonymous:  # no key needed for these
        assert (await anonymous.healthz()).status == "ok"


async def test_events_deliveries_retry_recover(delivering: Deliver, receivers: Start) -> None:
    # Every event's first request fails, the next ones succeed.
    rx = await receivers(fail_first(1))
    env = await delivering(retry_schedule="")  # one automatic attempt: it fails
    svc = env.svc
    async with (
        Client(svc.base_url, await svc.new_key("acme")) as client,
        Client(svc.base_url, await svc.new_key("backend", admin=True)) as admin,
    ):
        hook = await client.create_webhook(rx.url(), ["post.created", "comment.created"])

        test = await client.test_webhook(hook.id, "comment.created")
        assert test.success is False and test.status_code == 500
        detail = await client.get_delivery(hook.id, test.delivery_id)
        assert detail.test is True and detail.event == "comment.created"
        assert [a.status_code for a in detail.attempts] == [500]

        before = datetime.now(UTC) - timedelta(minutes=1)
        accepted = await admin.publish(
            "post.created", {"id": "post-1"}, event_id="post-1-created", audience=["acme"]
        )
        assert (accepted.id, accepted.deliveries, accepted.duplicate) == (
            "post-1-created",
            1,
            False,
        )
        again = await admin.publish(
            "post.created", {"id": "post-1"}, event_id="post-1-created", audience=["acme"]
        )
        assert again.duplicate is True
        keyed = await admin.publish(
            "comment.created", {"id": "c-1"}, audience="*", idempotency_key="comment-c-1"
        )
        assert keyed.id == "comment-c-1" and keyed.deliveries == 1
        assert (
            await admin.publish("comment.created", {}, audience="*", idempotency_key="comment-c-1")
        ).duplicate

        batch = await admin.publish_batch(
            [
                {"event": "post.created", "id": "batch-1", "data": {}, "audience": ["acme"]},
                {"event": "no.such.event", "data": {}},
            ]
        )
        assert (batch.accepted, batch.rejected) == (1, 1)
        assert batch.results[0].id == "batch-1"
        assert batch.results[1].error is not None
        assert batch.results[1].error.code == "unknown_event_type"

        # Each published event failed its one attempt.
        failed_id = await settle(client, hook.id, "post-1-created", "failed")
        await settle(client, hook.id, "batch-1", "failed")
        await settle(client, hook.id, "comment-c-1", "failed")
        failed = [d.event_id async for d in client.list_deliveries(hook.id, status="failed")]
        assert set(failed) == {"post-1-created", "batch-1", "comment-c-1", test.event_id}
        comments = [
            d.event_id async for d in client.list_deliveries(hook.id, event="comment.created")
        ]
        assert set(comments) == {"comment-c-1", test.event_id}
        one = await client.list_deliveries_page(hook.id, status="failed", limit=1)
        assert len(one.items) == 1 and one.next_cursor is not None

        retried = await client.retry_delivery(hook.id, failed_id)
        assert retried.success is True and retried.status_code == 200
        assert (await client.get_delivery(hook.id, failed_id)).status == "succeeded"

        recovered = await client.recover(hook.id, before)
        # The test delivery is not resent; the two failed published ones are.
        assert recovered.resent == 2
        await settle(client, hook.id, "batch-1", "succeeded")
        await settle(client, hook.id, "comment-c-1", "succeeded")
        assert len(rx.of("batch-1")) == 2


async def test_ingest_errors_pages(service: Service) -> None:
    refused = [
        IngestError(
            topic="bellamy.events",
            partition=0,
            offset=n,
            key=None,
            excerpt="{",
            code="not_json",
            reason="not JSON",
        )
        for n in range(5)
    ]
    await service.runtime.ingest_errors.record(refused, now=datetime.now(UTC))
    async with Client(service.base_url, await service.new_key("ops", admin=True)) as admin:
        offsets = [e.offset async for e in admin.list_ingest_errors(limit=2)]
        assert offsets == [4, 3, 2, 1, 0]
        first = await admin.list_ingest_errors_page(limit=3)
        assert [e.offset for e in first.items] == [4, 3, 2] and first.next_cursor
        rest = await admin.list_ingest_errors_page(limit=3, cursor=first.next_cursor)
        assert [e.offset for e in rest.items] == [1, 0] and rest.next_cursor is None
        assert all(e.code == "not_json" and e.topic == "bellamy.events" for e in rest.items)


async def test_webhooks_across_pages(service: Service) -> None:
    async with Client(service.base_url, await service.new_key("acme")) as client:
        made = [
            (await client.create_webhook(f"https://example.com/{n}", ["post.created"])).id
            for n in range(7)
        ]
        listed = [w.id async for w in client.list_webhooks(limit=3)]
        assert listed == list(reversed(made))  # each once, newest first
        page = await client.list_webhooks_page(limit=3)
        assert len(page.items) == 3 and page.next_cursor is not None
        tail = await client.list_webhooks_page(limit=5, cursor=page.next_cursor)
        assert [w.id for w in page.items + tail.items] == listed and tail.next_cursor is None


async def test_sync_client(delivering: Deliver, receivers: Start) -> None:
    rx = await receivers()
    env = await delivering()
    key = await env.svc.new_key("acme")
    base = env.svc.base_url

    def run() -> tuple[list[str], list[str], str, bool]:
        with SyncClient(base, key) as client:
            assert key not in repr(client)
            made = [client.create_webhook(rx.url(f"/{n}"), ["post.created"]).id for n in range(4)]
            listed = [w.id for w in client.list_webhooks(limit=3)]
            partial = client.list_webhooks(limit=1)
            assert next(partial).id == made[-1]
            partial.close()  # the async iterator under it is closed on the client's loop
            outcome = client.test_webhook(made[0])
            deliveries = [d.id for d in client.list_deliveries(made[0])]
            client.update_webhook(made[1], description="synced")
            described = client.get_webhook(made[1]).description or ""
            try:
                client.get_webhook("wh_missing")
            except NotFoundError:
                missing = True
            else:
                missing = False
            assert deliveries == [outcome.delivery_id] and outcome.success
            return made, listed, described, missing

    made, listed, described, missing = await asyncio.to_thread(run)
    assert listed == list(reversed(made))
    assert described == "synced"
    assert missing
    assert len(rx.of(rx.hits[0].event_id)) == 1


async def test_an_error_of_each_kind(serve: Serve) -> None:
    svc: Service = await serve(rate_limit=2)  # two calls a minute per non-admin key

    async with Client(svc.base_url, "bh_not_a_real_key") as stranger:
        with pytest.raises(AuthenticationError) as unauthorized:
            await stranger.list_webhooks_page()
    assert unauthorized.value.status == 401 and unauthorized.value.code == "unauthorized"
    assert str(unauthorized.value).startswith("401 unauthorized: ")
    assert "bh_not_a_real_key" not in str(unauthorized.value)
    assert "bh_not_a_real_key" not in repr(unauthorized.value)

    async with Client(svc.base_url, await svc.new_key("acme")) as client:
        with pytest.raises(ForbiddenError) as forbidden:
            await client.publish("post.created", {})
    assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
    assert str(forbidden.value).startswith("403 forbidden: ")

    async with Client(svc.base_url, await svc.new_key("acme")) as client:
        with pytest.raises(NotFoundError) as missing:
            await client.get_webhook("wh_nope")
    error = missing.value
    assert (error.status, error.code) == (404, "not_found")
    assert str(error) == f"404 not_found: {error.message}" and "wh_nope" in str(error)
    assert "\n" not in str(error)

    async with Client(svc.base_url, await svc.new_key("acme")) as client:
        with pytest.raises(ValidationError) as invalid:
            await client.create_webhook("https://example.com/h", [])
    assert (invalid.value.status, invalid.value.code) == (422, "validation_error")
    assert any(d.get("field") == "events" for d in invalid.value.details), invalid.value.details
    assert str(invalid.value).startswith("422 validation_error: ")

    async with Client(svc.base_url, await svc.new_key("acme")) as client:
        await client.list_webhooks_page()
        await client.list_webhooks_page()
        with pytest.raises(RateLimitedError) as limited:
            await client.list_webhooks_page()
    assert (limited.value.status, limited.value.code) == (429, "rate_limited")
    assert limited.value.retry_after is not None and limited.value.retry_after >= 1
    assert str(limited.value).startswith("429 rate_limited: ")


async def test_connection_refused_names_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The port is closed now: nothing listens on it.
    url = f"http://127.0.0.1:{port}"
    async with Client(url, "bh_secret_key_value", timeout=5) as client:
        with pytest.raises(ApiConnectionError) as refused:
            await client.healthz()
    error = refused.value
    assert error.status is None and error.code == "connection_error"
    assert f"{url}/healthz" in str(error) and error.url == f"{url}/healthz"
    assert "bh_secret_key_value" not in str(error) and "\n" not in str(error)
    assert isinstance(error, ApiError)
    assert error.__cause__ is not None  # the httpx error, kept as the cause
