"""The webhook management API, end to end over HTTP against a real uvicorn server.

Covers every route and its success envelope, the guide's flow (create → list →
update → delete), partial updates, status changes, secret handling, validation
errors and the per-owner webhook limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support import error_of

HOOK = "https://example.com/hook"

GUIDE_EVENTS = {
    "post.created",
    "post.updated",
    "post.deleted",
    "comment.created",
    "reaction.added",
    "user.registered",
    "friend.request.sent",
    "friend.request.accepted",
}

# Fields the guide shows for a webhook, plus the ones the issue adds.
WEBHOOK_FIELDS = {"id", "url", "events", "status", "createdAt", "updatedAt", "description"}


# --- helpers ---------------------------------------------------------------------------


def ok_data(resp: httpx.Response, status: int = 200) -> Any:
    """The ``data`` of a success envelope, checking its exact top-level keys."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"success", "data"}, body
    assert body["success"] is True
    return body["data"]


def assert_timestamp(value: Any) -> datetime:
    assert isinstance(value, str) and value.endswith("Z"), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0)
    # Made by this test run, not some fixed value (a generous window, not a timing).
    assert abs(datetime.now(UTC) - parsed) < timedelta(hours=1)
    return parsed


def assert_webhook(data: Any) -> None:
    assert isinstance(data, dict)
    missing = WEBHOOK_FIELDS - set(data)
    assert not missing, f"webhook lacks {missing}: {data}"
    assert isinstance(data["id"], str) and data["id"]
    assert data["status"] in ("active", "disabled")
    assert isinstance(data["events"], list)
    created = assert_timestamp(data["createdAt"])
    updated = assert_timestamp(data["updatedAt"])
    assert updated >= created


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"url": HOOK, "events": ["post.created"]}
    body.update(fields)
    data = ok_data(await client.post("/api/webhooks", json=body), 201)
    assert_webhook(data)
    return data  # type: ignore[no-any-return]


async def list_all(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    resp = await client.get("/api/webhooks", params={"limit": 250})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["pagination"]["nextCursor"] is None
    return body["data"]  # type: ignore[no-any-return]


def without_volatile(webhook: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in webhook.items() if k not in ("updatedAt", "secret")}


# --- the guide's flow -------------------------------------------------------------------


async def test_guide_flow_create_list_update_delete(service: Any) -> None:
    token = await service.new_key("alice")
    async with service.client(token) as client:
        # Register, exactly as the guide shows it.
        resp = await client.post(
            "/api/webhooks",
            json={
                "url": "https://your-app.com/webhook",
                "events": ["post.created", "comment.created"],
                "secret": "your-webhook-secret",
            },
        )
        created = ok_data(resp, 201)
        assert_webhook(created)
        assert created["url"] == "https://your-app.com/webhook"
        assert created["events"] == ["post.created", "comment.created"]
        assert created["status"] == "active"
        assert created.get("secret") is None
        assert "your-webhook-secret" not in resp.text
        webhook_id = created["id"]

        # List: exact envelope with pagination.
        resp = await client.get("/api/webhooks")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert set(body) == {"success", "data", "pagination"}
        assert body["success"] is True
        assert set(body["pagination"]) == {"nextCursor"}
        assert body["pagination"]["nextCursor"] is None
        assert [w["id"] for w in body["data"]] == [webhook_id]
        listed = body["data"][0]
        assert_webhook(listed)
        assert "secret" not in listed
        assert without_volatile(listed) == without_volatile(created)

        # Read one.
        got = ok_data(await client.get(f"/api/webhooks/{webhook_id}"))
        assert got == listed

        # Update, exactly as the guide shows it.
        resp = await client.put(
            f"/api/webhooks/{webhook_id}",
            json={
                "url": "https://new-url.com/webhook",
                "events": ["post.created", "post.updated"],
            },
        )
        updated = ok_data(resp)
        assert_webhook(updated)
        assert updated["id"] == webhook_id
        assert updated["url"] == "https://new-url.com/webhook"
        assert updated["events"] == ["post.created", "post.updated"]
        assert updated["status"] == "active"
        assert updated["createdAt"] == created["createdAt"]
        assert ok_data(await client.get(f"/api/webhooks/{webhook_id}")) == updated

        # Delete: {"success": true} and nothing else.
        resp = await client.delete(f"/api/webhooks/{webhook_id}")
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"success": True}

        # Gone everywhere.
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            kwargs: dict[str, Any] = {"json": {}} if method in ("PUT", "PATCH") else {}
            resp = await client.request(method, f"/api/webhooks/{webhook_id}", **kwargs)
            assert error_of(resp, 404)["code"] == "not_found", method
        assert error_of(await client.get(f"/api/webhooks/{webhook_id}/secret"), 404)
        assert await list_all(client) == []


async def test_event_types_lists_the_guide_catalog(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        resp = await client.get("/api/event-types")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True
    assert {"success", "data"} <= set(body)
    names = [t["name"] for t in body["data"]]
    assert len(names) == len(set(names))
    assert set(names) == GUIDE_EVENTS
    for entry in body["data"]:
        assert set(entry) == {"name", "description", "example"}, entry
        assert isinstance(entry["description"], str) and entry["description"].strip()
        assert isinstance(entry["example"], dict) and entry["example"]


async def test_every_event_type_and_wildcard_can_be_subscribed(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        everything = await create(client, events=sorted(GUIDE_EVENTS))
        assert sorted(everything["events"]) == sorted(GUIDE_EVENTS)
        wildcard = await create(client, events=["*"])
        assert wildcard["events"] == ["*"]
        got = ok_data(await client.get(f"/api/webhooks/{wildcard['id']}"))
        assert got["events"] == ["*"]


async def test_create_keeps_description(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create(client, description="orders to the CRM")
        assert created["description"] == "orders to the CRM"
        got = ok_data(await client.get(f"/api/webhooks/{created['id']}"))
        assert got["description"] == "orders to the CRM"
        plain = await create(client)
        assert plain["description"] is None


# --- updates -------------------------------------------------------------------------


async def test_put_updates_only_the_fields_sent(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create(client, events=["post.created"], description="keep me")
        webhook_id = created["id"]

        updated = ok_data(
            await client.put(f"/api/webhooks/{webhook_id}", json={"events": ["reaction.added"]})
        )
        assert updated["events"] == ["reaction.added"]
        assert updated["url"] == HOOK
        assert updated["description"] == "keep me"
        assert updated["status"] == "active"

        updated = ok_data(
            await client.put(
                f"/api/webhooks/{webhook_id}", json={"url": "https://example.org/other"}
            )
        )
        assert updated["url"] == "https://example.org/other"
        assert updated["events"] == ["reaction.added"]
        assert updated["description"] == "keep me"

        # An empty update changes nothing.
        same = ok_data(await client.put(f"/api/webhooks/{webhook_id}", json={}))
        assert without_volatile(same) == without_volatile(updated)

        # And it is stored, not just echoed.
        got = ok_data(await client.get(f"/api/webhooks/{webhook_id}"))
        assert without_volatile(got) == without_volatile(updated)


async def test_patch_updates_only_the_fields_sent(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create(
            client, events=["post.created", "post.deleted"], description="patch me"
        )
        webhook_id = created["id"]
        patched = ok_data(
            await client.patch(f"/api/webhooks/{webhook_id}", json={"description": "patched"})
        )
        assert patched["description"] == "patched"
        assert patched["events"] == ["post.created", "post.deleted"]
        assert patched["url"] == HOOK
        assert patched["createdAt"] == created["createdAt"]

        patched = ok_data(
            await client.patch(f"/api/webhooks/{webhook_id}", json={"url": "https://example.net/h"})
        )
        assert patched["url"] == "https://example.net/h"
        assert patched["description"] == "patched"
        got = ok_data(await client.get(f"/api/webhooks/{webhook_id}"))
        assert without_volatile(got) == without_volatile(patched)


async def test_status_disable_and_enable(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create(client, description="toggled")
        webhook_id = created["id"]

        disabled = ok_data(
            await client.put(f"/api/webhooks/{webhook_id}", json={"status": "disabled"})
        )
        assert disabled["status"] == "disabled"
        assert disabled["description"] == "toggled"
        assert disabled["events"] == created["events"]
        assert ok_data(await client.get(f"/api/webhooks/{webhook_id}"))["status"] == "disabled"
        listed = await list_all(client)
        assert [w["status"] for w in listed] == ["disabled"]

        enabled = ok_data(
            await client.patch(f"/api/webhooks/{webhook_id}", json={"status": "active"})
        )
        assert enabled["status"] == "active"
        assert enabled.get("disabledReason") is None
        assert ok_data(await client.get(f"/api/webhooks/{webhook_id}"))["status"] == "active"

        # Other fields in the same request are applied too.
        both = ok_data(
            await client.put(
                f"/api/webhooks/{webhook_id}", json={"status": "disabled", "events": ["*"]}
            )
        )
        assert both["status"] == "disabled"
        assert both["events"] == ["*"]


@pytest.mark.parametrize("status", ["paused", "ACTIVE", "", 1])
async def test_invalid_status_is_refused(service: Any, status: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create(client)
        error = error_of(
            await client.put(f"/api/webhooks/{created['id']}", json={"status": status}), 422
        )
        assert any(d.get("field") == "status" for d in error["details"]), error
        got = ok_data(await client.get(f"/api/webhooks/{created['id']}"))
        assert got["status"] == "active"


async def test_description_can_be_cleared_and_is_kept_when_absent(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create(client, description="to be cleared")
        webhook_id = created["id"]

        kept = ok_data(
            await client.put(f"/api/webhooks/{webhook_id}", json={"events": ["post.deleted"]})
        )
        assert kept["description"] == "to be cleared"

        cleared = ok_data(
            await client.put(f"/api/webhooks/{webhook_id}", json={"description": None})
        )
        assert cleared["description"] is None
        assert cleared["events"] == ["post.deleted"]
        assert ok_data(await client.get(f"/api/webhooks/{webhook_id}"))["description"] is None

        again = ok_data(
            await client.patch(f"/api/webhooks/{webhook_id}", json={"description": "back"})
        )
        assert again["description"] == "back"
        cleared = ok_data(
            await client.patch(f"/api/webhooks/{webhook_id}", json={"description": None})
        )
        assert cleared["description"] is None


async def test_unknown_webhook_id_is_404_on_every_route(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        await create(client)
        missing = "wh_doesnotexist0000000000000"
        responses = [
            await client.get(f"/api/webhooks/{missing}"),
            await client.put(f"/api/webhooks/{missing}", json={"description": "x"}),
            await client.patch(f"/api/webhooks/{missing}", json={"description": "x"}),
            await client.delete(f"/api/webhooks/{missing}"),
            await client.get(f"/api/webhooks/{missing}/secret"),
        ]
    for resp in responses:
        assert error_of(resp, 404)["code"] == "not_found", resp.request


# --- secrets -------------------------------------------------------------------------


def assert_secret_absent(secret: str, *responses: httpx.Response) -> None:
    for resp in responses:
        assert resp.status_code < 400, resp.text
        assert secret not in resp.text, f"{resp.request.method} {resp.request.url} leaks it"
        # Also not in some escaped form (e.g. "/" written as "\/").
        assert secret not in str(resp.json())


async def test_generated_secret_format_and_shown_once(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create(client)
        secret = created["secret"]
        assert isinstance(secret, str) and secret.startswith("whsec_"), secret
        try:
            raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            pytest.fail(f"not base64 after whsec_: {secret!r}")
        assert 24 <= len(raw) <= 32

        webhook_id = created["id"]
        fetched = ok_data(await client.get(f"/api/webhooks/{webhook_id}/secret"))
        assert fetched["secret"] == secret

        assert_secret_absent(
            secret,
            await client.get("/api/webhooks"),
            await client.get(f"/api/webhooks/{webhook_id}"),
            await client.put(f"/api/webhooks/{webhook_id}", json={"description": "d"}),
            await client.patch(f"/api/webhooks/{webhook_id}", json={"status": "disabled"}),
            await client.delete(f"/api/webhooks/{webhook_id}"),
        )


async def test_generated_secrets_differ(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        secrets = {(await create(client))["secret"] for _ in range(3)}
    assert len(secrets) == 3


async def test_given_secret_is_returned_only_by_the_secret_route(service: Any) -> None:
    secret = "my-own-signing-secret-0123456789"
    async with service.client(await service.new_key("alice")) as client:
        resp = await client.post(
            "/api/webhooks",
            json={
                "url": HOOK,
                "events": ["comment.created"],
                "secret": secret,
            },
        )
        created = ok_data(resp, 201)
        assert created.get("secret") is None
        assert secret not in resp.text
        webhook_id = created["id"]

        fetched = ok_data(await client.get(f"/api/webhooks/{webhook_id}/secret"))
        assert fetched["secret"] == secret

        assert_secret_absent(
            secret,
            await client.get("/api/webhooks"),
            await client.get(f"/api/webhooks/{webhook_id}"),
            await client.put(f"/api/webhooks/{webhook_id}", json={"events": ["*"]}),
            await client.patch(f"/api/webhooks/{webhook_id}", json={"description": None}),
            await client.get("/api/event-types"),
        )
        # An update does not change the secret.
        assert ok_data(await client.get(f"/api/webhooks/{webhook_id}/secret"))["secret"] == secret


@pytest.mark.parametrize("length", [16, 256])
async def test_secret_length_bounds_are_accepted(service: Any, length: int) -> None:
    secret = ("abcdefghij" * 26)[:length]
    async with service.client(await service.new_key("alice")) as client:
        created = await create(client, secret=secret)
        got = ok_data(await client.get(f"/api/webhooks/{created['id']}/secret"))
    assert got["secret"] == secret


async def test_secret_cannot_be_changed_through_update(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create(client)
        resp = await client.put(
            f"/api/webhooks/{created['id']}", json={"secret": "a-brand-new-secret-value"}
        )
        error = error_of(resp, 422)
        assert any(d.get("field") == "secret" for d in error["details"]), error
        got = ok_data(await client.get(f"/api/webhooks/{created['id']}/secret"))
    assert got["secret"] == created["secret"]


# --- validation --------------------------------------------------------------------------


def _events_detail(error: dict[str, Any]) -> bool:
    return any(d.get("field") == "events" for d in error["details"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["post.created"]}, "url"),
        ({"url": None, "events": ["post.created"]}, "url"),
        ({"url": "", "events": ["post.created"]}, "url"),
        ({"url": 42, "events": ["post.created"]}, "url"),
        ({"url": HOOK}, "events"),
        ({"url": HOOK, "events": []}, "events"),
        ({"url": HOOK, "events": "post.created"}, "events"),
        ({"url": HOOK, "events": {"post.created": True}}, "events"),
        ({"url": HOOK, "events": None}, "events"),
        ({"url": HOOK, "events": ["*", "post.created"]}, "events"),
        ({"url": HOOK, "events": ["post.created", "*"]}, "events"),
        ({"url": HOOK, "events": ["post.created"], "secret": "x" * 15}, "secret"),
        ({"url": HOOK, "events": ["post.created"], "secret": "x" * 257}, "secret"),
        ({"url": HOOK, "events": ["post.created"], "secret": ""}, "secret"),
        ({"url": HOOK, "events": ["post.created"], "secret": 1234567890123456789}, "secret"),
        ({"url": HOOK, "events": ["post.created"], "colour": "blue"}, "colour"),
        ({"url": HOOK, "events": ["post.created"], "status": "active", "id": "wh_x"}, "id"),
        ({"url": HOOK, "events": ["post.created"], "description": "d" * 5000}, "description"),
    ],
)
async def test_create_validation_errors_name_the_field(
    service: Any, body: dict[str, Any], field: str
) -> None:
    async with service.client(await service.new_key("alice")) as client:
        resp = await client.post("/api/webhooks", json=body)
        error = error_of(resp, 422)
        assert any(d.get("field") == field for d in error["details"]), error
        if field not in ("events",):
            assert field in error["message"], error
        assert await list_all(client) == []


async def test_create_body_must_be_an_object(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        for raw in (b"[]", b'["https://example.com/hook"]', b'"hook"', b"1", b"null"):
            resp = await client.post(
                "/api/webhooks", content=raw, headers={"Content-Type": "application/json"}
            )
            error_of(resp, 422)
        assert await list_all(client) == []


async def test_unknown_event_type_names_the_valid_ones(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        resp = await client.post(
            "/api/webhooks",
            json={
                "url": HOOK,
                "events": ["post.created", "post.liked"],
            },
        )
        error = error_of(resp, 422)
        assert "post.liked" in error["message"]
        for name in GUIDE_EVENTS:
            assert name in error["message"], name
        assert _events_detail(error), error
        allowed = {name for d in error["details"] for name in d.get("allowed", [])}
        assert allowed >= GUIDE_EVENTS, error
        assert any(d.get("value") == "post.liked" for d in error["details"]), error
        assert await list_all(client) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": []}, "events"),
        ({"events": "post.created"}, "events"),
        ({"events": ["*", "post.created"]}, "events"),
        ({"events": ["nope.nope"]}, "events"),
        ({"url": ""}, "url"),
        ({"colour": "blue"}, "colour"),
        ({"description": "d" * 5000}, "description"),
    ],
)
async def test_update_validation_errors_change_nothing(
    service: Any, body: dict[str, Any], field: str
) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create(client, description="before")
        for method in ("PUT", "PATCH"):
            resp = await client.request(method, f"/api/webhooks/{created['id']}", json=body)
            error = error_of(resp, 422)
            assert any(d.get("field") == field for d in error["details"]), error
        got = ok_data(await client.get(f"/api/webhooks/{created['id']}"))
    assert got == {k: v for k, v in created.items() if k != "secret"}


# --- limits ------------------------------------------------------------------------------


async def test_max_webhooks_per_owner(serve: Any) -> None:
    service = await serve(max_webhooks_per_owner=2)
    async with (
        service.client(await service.new_key("alice")) as alice,
        service.client(await service.new_key("bob")) as bob,
    ):
        first = await create(alice)
        await create(alice)
        resp = await alice.post("/api/webhooks", json={"url": HOOK, "events": ["*"]})
        error = error_of(resp, 422)
        assert "2" in error["message"]
        assert len(await list_all(alice)) == 2

        # The limit is per owner.
        await create(bob)
        await create(bob)

        # Deleting one makes room again.
        assert (await alice.delete(f"/api/webhooks/{first['id']}")).status_code == 200
        await create(alice)
        error_of(await alice.post("/api/webhooks", json={"url": HOOK, "events": ["*"]}), 422)
        assert len(await list_all(alice)) == 2


async def test_max_webhooks_per_owner_holds_under_concurrent_creates(serve: Any) -> None:
    service = await serve(max_webhooks_per_owner=2)
    async with service.client(await service.new_key("alice")) as client:
        responses = await asyncio.gather(
            *[client.post("/api/webhooks", json={"url": HOOK, "events": ["*"]}) for _ in range(20)]
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] * 2 + [422] * 18, statuses
        assert len(await list_all(client)) == 2


# --- odd input that reaches the database ---------------------------------------------------


async def test_nul_in_webhook_id_is_404(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        await create(client)
        for method, path in [
            ("GET", "/api/webhooks/a%00b"),
            ("PUT", "/api/webhooks/a%00b"),
            ("PATCH", "/api/webhooks/%00"),
            ("DELETE", "/api/webhooks/%00"),
            ("GET", "/api/webhooks/%00/secret"),
        ]:
            body = {} if method in ("PUT", "PATCH") else None
            resp = await client.request(method, path, json=body)
            assert error_of(resp, 404)["code"] == "not_found", (method, path)


async def test_nul_in_description_is_refused_or_kept(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        resp = await client.post(
            "/api/webhooks", json={"url": HOOK, "events": ["*"], "description": "a\u0000b"}
        )
        if resp.status_code == 422:
            error = error_of(resp, 422)
            assert any(d.get("field") == "description" for d in error["details"]), error
            assert await list_all(client) == []
            return
        created = ok_data(resp, 201)
        got = ok_data(await client.get(f"/api/webhooks/{created['id']}"))
        assert got["description"] == "a\u0000b"


async def test_unicode_description_round_trips(service: Any) -> None:
    text = 'caf\u00e9 \u2615 \U0001d11e \u65e5\u672c "quoted" <tag> \\ /'
    async with service.client(await service.new_key("alice")) as client:
        created = await create(client, description=text)
        assert created["description"] == text
        got = ok_data(await client.get(f"/api/webhooks/{created['id']}"))
        assert got["description"] == text
        updated = ok_data(
            await client.patch(f"/api/webhooks/{created['id']}", json={"description": text * 2})
        )
        assert updated["description"] == text * 2
