"""Limits with clear errors: body size, URL length, event names, webhooks per owner,
per-key rate limits, and hostile request bodies that must answer 4xx, never 500."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support import error_of, ok_data

HOOK = "https://hooks.example.com/hook"
MIB = 1024 * 1024
JSON = {"Content-Type": "application/json"}


def client_error(resp: httpx.Response) -> dict[str, Any]:
    """A 4xx in the envelope (never a 500, never a bare framework error)."""
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:500])
    return error_of(resp, resp.status_code)


def webhook(**fields: Any) -> dict[str, Any]:
    return {"url": HOOK, "events": ["post.created"], **fields}


# --- size limits -------------------------------------------------------------------------


async def test_a_body_over_one_mib_is_413(service: Any) -> None:
    user = await service.new_key("acme")
    admin = await service.new_key("backend", admin=True)
    padding = "x" * MIB
    async with service.client(user) as client:
        resp = await client.post("/api/webhooks", json=webhook(description=padding))
        error = error_of(resp, 413)
        assert error["code"] == "payload_too_large"
        assert error["details"] == [{"limit": MIB}]
        assert ok_data(await client.get("/api/webhooks")) == []
    async with service.client(admin) as client:
        resp = await client.post(
            "/api/events", json={"event": "post.created", "data": {"blob": padding}}
        )
        assert error_of(resp, 413)["code"] == "payload_too_large"


async def test_a_url_over_2048_characters_is_422(service: Any) -> None:
    token = await service.new_key("acme")
    base = "https://hooks.example.com/"
    async with service.client(token) as client:
        longest = base + "a" * (2048 - len(base))
        assert ok_data(await client.post("/api/webhooks", json=webhook(url=longest)), 201)
        error = error_of(await client.post("/api/webhooks", json=webhook(url=longest + "a")), 422)
        assert error["details"][0]["field"] == "url"
        assert "2048" in error["message"]
        created = ok_data(await client.get("/api/webhooks"))
        error = error_of(
            await client.patch(f"/api/webhooks/{created[0]['id']}", json={"url": longest + "a"}),
            422,
        )
        assert error["details"][0]["field"] == "url"


async def test_more_than_50_event_names_is_422(service: Any) -> None:
    token = await service.new_key("acme")
    async with service.client(token) as client:
        error = error_of(
            await client.post("/api/webhooks", json=webhook(events=["post.created"] * 51)), 422
        )
        assert error["details"][0]["field"] == "events"
        assert "50" in error["message"]
        # 50 (duplicates collapse to one subscription) is accepted.
        created = ok_data(
            await client.post("/api/webhooks", json=webhook(events=["post.created"] * 50)), 201
        )
        assert created["events"] == ["post.created"]
        error = error_of(
            await client.put(
                f"/api/webhooks/{created['id']}", json={"events": ["comment.created"] * 51}
            ),
            422,
        )
        assert error["details"][0]["field"] == "events"


async def test_webhooks_per_owner_are_limited(serve: Callable[..., Any]) -> None:
    service = await serve(max_webhooks_per_owner=3)
    acme = await service.new_key("acme")
    acme_again = await service.new_key("acme")
    other = await service.new_key("other")
    async with service.client(acme) as client:
        ids = [
            ok_data(await client.post("/api/webhooks", json=webhook()), 201)["id"] for _ in range(3)
        ]
        error = error_of(await client.post("/api/webhooks", json=webhook()), 422)
        assert error["code"] == "limit_exceeded"
        assert error["details"] == [{"limit": 3}]
        assert "BELLHOOK_MAX_WEBHOOKS_PER_OWNER" in error["message"]
    async with service.client(acme_again) as client:
        # The quota is the owner's, whichever of its keys is used.
        error_of(await client.post("/api/webhooks", json=webhook()), 422)
    async with service.client(other) as client:
        assert ok_data(await client.post("/api/webhooks", json=webhook()), 201)
    async with service.client(acme) as client:
        deleted = await client.delete(f"/api/webhooks/{ids[0]}")
        assert deleted.status_code == 200, deleted.text
        assert ok_data(await client.post("/api/webhooks", json=webhook()), 201)
        assert len(ok_data(await client.get("/api/webhooks"))) == 3


# --- rate limits ---------------------------------------------------------------------------


def assert_rate_limited(resp: httpx.Response, *, limit: int) -> int:
    error = error_of(resp, 429)
    assert error["code"] == "rate_limited"
    retry_after = int(resp.headers["Retry-After"])
    assert 1 <= retry_after <= 60 / limit + 1
    assert error["details"] == [{"limit": limit, "period": 60, "retryAfter": retry_after}]
    assert f"retry in {retry_after} s" in error["message"]
    return retry_after


async def test_calls_over_the_rate_limit_get_429_with_retry_after(
    serve: Callable[..., Any],
) -> None:
    service = await serve(rate_limit=5)
    first = await service.new_key("acme")
    second = await service.new_key("acme")
    admin = await service.new_key("backend", admin=True)
    async with service.client(first) as client:
        # Every /api route counts, whatever it answers.
        answers = [
            (await client.get("/api/webhooks")).status_code,
            (await client.get("/api/event-types")).status_code,
            (await client.get("/api/webhooks/wh_missing")).status_code,
            (await client.post("/api/webhooks", json={"url": 1})).status_code,
            (await client.post("/api/events", json={})).status_code,
        ]
        assert answers == [200, 200, 404, 422, 403]
        for method, path in [("GET", "/api/webhooks"), ("POST", "/api/webhooks")]:
            resp = await client.request(method, path, json=webhook())
            assert_rate_limited(resp, limit=5)
        assert "BELLHOOK_RATE_LIMIT" in resp.json()["error"]["message"]
        # Not counted against anything else: health and docs stay open.
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200
    async with service.client(first) as client:
        assert_rate_limited(await client.get("/api/webhooks"), limit=5)
    # The limit is per key: another key of the same owner has its own allowance.
    async with service.client(second) as client:
        for _ in range(5):
            assert (await client.get("/api/webhooks")).status_code == 200
        assert_rate_limited(await client.get("/api/webhooks"), limit=5)
    # Admin keys are not limited unless BELLHOOK_ADMIN_RATE_LIMIT is set.
    async with service.client(admin) as client:
        for _ in range(20):
            assert (await client.get("/api/webhooks")).status_code == 200


async def test_unauthenticated_calls_do_not_use_up_a_keys_allowance(
    serve: Callable[..., Any],
) -> None:
    service = await serve(rate_limit=3)
    token = await service.new_key("acme")
    key_id_part = token.split("_")[2]
    forged = f"bhk_key_{key_id_part}_{'A' * 43}"  # right key id, wrong secret
    async with httpx.AsyncClient(base_url=service.base_url) as anon:
        for headers in ({}, {"Authorization": f"Bearer {forged}"}) * 10:
            resp = await anon.get("/api/webhooks", headers=headers)
            assert error_of(resp, 401)["code"] == "unauthorized"
    async with service.client(token) as client:
        for _ in range(3):
            assert (await client.get("/api/webhooks")).status_code == 200
        assert_rate_limited(await client.get("/api/webhooks"), limit=3)


async def test_admin_keys_are_limited_when_configured(serve: Callable[..., Any]) -> None:
    service = await serve(rate_limit=100, admin_rate_limit=2)
    admin = await service.new_key("backend", admin=True)
    user = await service.new_key("acme")
    event = {"event": "post.created", "data": {"id": "p"}}
    async with service.client(admin) as client:
        assert (await client.post("/api/events", json=event)).status_code == 202
        assert (await client.get("/api/webhooks")).status_code == 200
        resp = await client.post("/api/events", json=event)
        assert_rate_limited(resp, limit=2)
        assert "BELLHOOK_ADMIN_RATE_LIMIT" in resp.json()["error"]["message"]
    async with service.client(user) as client:
        for _ in range(10):
            assert (await client.get("/api/webhooks")).status_code == 200


async def test_a_rate_limit_of_zero_is_off(serve: Callable[..., Any]) -> None:
    service = await serve(rate_limit=0)
    token = await service.new_key("acme")
    async with service.client(token) as client:
        for _ in range(30):
            assert (await client.get("/api/event-types")).status_code == 200


# --- hostile bodies: 4xx in the envelope, never a 500 -------------------------------------

MALFORMED = [
    ("truncated", b'{"url": "https://hooks.example.com/", "events": ['),
    ("not json", b"url=https://hooks.example.com/"),
    ("empty", b""),
    ("trailing comma", b'{"url": "https://hooks.example.com/", }'),
    ("single quotes", b"{'url': 'https://hooks.example.com/'}"),
    ("invalid utf-8", b'{"url": "https://hooks.example.com/\xff\xfe", "events": ["post.created"]}'),
    ("lone surrogate", b'{"url": "https://hooks.example.com/\\ud800", "events": ["post.created"]}'),
    ("nan", b'{"url": NaN, "events": ["post.created"]}'),
    ("nul byte", b'{"url": "https://hooks.example.com/\\u0000", "events": ["post.created"]}'),
    ("huge number", b'{"url": "https://hooks.example.com/", "events": [1' + b"0" * 5000 + b"]}"),
    ("two documents", b'{"url": "https://hooks.example.com/"} {"events": []}'),
]


@pytest.mark.parametrize("body", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_malformed_json_is_4xx(service: Any, body: bytes) -> None:
    token = await service.new_key("acme")
    async with service.client(token) as client:
        error = client_error(await client.post("/api/webhooks", content=body, headers=JSON))
        assert ok_data(await client.get("/api/webhooks")) == []
    assert error["code"] != "internal_error"


WRONG_TYPES = [
    ("body is a list", []),
    ("body is null", None),
    ("body is a string", "https://hooks.example.com/"),
    ("url is a number", {"url": 123, "events": ["post.created"]}),
    ("url is a list", {"url": [HOOK], "events": ["post.created"]}),
    ("events is a string", {"url": HOOK, "events": "post.created"}),
    ("events are numbers", {"url": HOOK, "events": [1, 2]}),
    ("events are objects", {"url": HOOK, "events": [{"name": "post.created"}]}),
    ("secret is a bool", {"url": HOOK, "events": ["post.created"], "secret": True}),
    ("description is an object", {"url": HOOK, "events": ["post.created"], "description": {}}),
    ("unknown field", {"url": HOOK, "events": ["post.created"], "owner": "someone-else"}),
    ("unknown event", {"url": HOOK, "events": ["post.exploded"]}),
    ("no events", {"url": HOOK, "events": []}),
    ("missing url", {"events": ["post.created"]}),
]


@pytest.mark.parametrize("body", [w[1] for w in WRONG_TYPES], ids=[w[0] for w in WRONG_TYPES])
async def test_wrong_types_are_422(service: Any, body: Any) -> None:
    token = await service.new_key("acme")
    async with service.client(token) as client:
        resp = await client.post("/api/webhooks", content=json.dumps(body), headers=JSON)
        error = error_of(resp, 422)
        assert ok_data(await client.get("/api/webhooks")) == []
    assert error["details"], error


HUGE = 900 * 1024  # under the 1 MiB body limit, over every field limit


@pytest.mark.parametrize(
    "field", ["url", "description", "secret", "events"], ids=lambda f: f"huge {f}"
)
async def test_huge_strings_are_422(service: Any, field: str) -> None:
    token = await service.new_key("acme")
    value: Any = ["p" * HUGE] if field == "events" else "x" * HUGE
    if field == "url":
        value = "https://hooks.example.com/" + value
    async with service.client(token) as client:
        resp = await client.post("/api/webhooks", json=webhook(**{field: value}))
        error = error_of(resp, 422)
        assert len(resp.content) < 64 * 1024  # the answer does not echo the value back
        created = ok_data(await client.post("/api/webhooks", json=webhook()), 201)
        patched = await client.patch(
            f"/api/webhooks/{created['id']}", json={field: value} if field != "secret" else {}
        )
    assert error["details"][0]["field"].startswith(field)
    if field != "secret":
        error_of(patched, 422)


async def test_huge_event_fields_are_422(service: Any) -> None:
    admin = await service.new_key("backend", admin=True)
    async with service.client(admin) as client:
        for body in (
            {"event": "e" * HUGE, "data": {}},
            {"event": "post.created", "id": "i" * HUGE, "data": {}},
            {"event": "post.created", "audience": ["a" * HUGE], "data": {}},
            {"event": "post.created", "audience": [f"o{n}" for n in range(10_001)], "data": {}},
        ):
            resp = await client.post("/api/events", json=body)
            client_error(resp)
            assert len(resp.content) < 64 * 1024
        resp = await client.post(
            "/api/events",
            json={"event": "post.created", "data": {}},
            headers={"Idempotency-Key": "k" * 300},
        )
        client_error(resp)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "abc"},
        {"limit": str(10**30)},
        {"limit": "-1"},
        {"cursor": "c" * 600},
        {"cursor": "not-a-cursor"},
        {"cursor": "\u0000"},
    ],
    ids=[
        "limit-text",
        "limit-huge",
        "limit-negative",
        "cursor-long",
        "cursor-garbage",
        "cursor-nul",
    ],
)
async def test_bad_query_parameters_are_4xx(service: Any, params: dict[str, str]) -> None:
    token = await service.new_key("acme")
    async with service.client(token) as client:
        client_error(await client.get("/api/webhooks", params=params))


DEPTHS = [100, 500, 900, 950, 980, 999, 1000, 2000, 10_000, 100_000]


def nested_arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", DEPTHS)
async def test_deeply_nested_json_is_4xx_never_500(service: Any, depth: int) -> None:
    user = await service.new_key("acme")
    admin = await service.new_key("backend", admin=True)
    arrays, objects = nested_arrays(depth), nested_objects(depth)
    assert len(arrays.encode()) <= MIB
    as_webhook = [
        arrays,
        objects,
        f'{{"url": "{HOOK}", "events": {arrays}}}',
        f'{{"url": "{HOOK}", "events": ["post.created"], "description": {objects}}}',
    ]
    as_event = [
        arrays,
        f'{{"event": "post.created", "data": {{"x": {arrays}}}}}',
        f'{{"event": "post.created", "data": {objects}}}',
        f'{{"event": "post.created", "audience": {arrays}, "data": {{}}}}',
    ]
    async with service.client(user) as client:
        for body in as_webhook:
            client_error(await client.post("/api/webhooks", content=body, headers=JSON))
        assert ok_data(await client.get("/api/webhooks")) == []
    async with service.client(admin) as client:
        for body in as_event:
            resp = await client.post("/api/events", content=body, headers=JSON)
            if resp.status_code == 202:
                # Shallow enough to be a legitimate event: accepted as sent.
                assert depth <= 100, resp.text
                continue
            client_error(resp)
        # The service is still healthy afterwards.
        assert (await client.get("/healthz")).status_code == 200


async def test_a_valid_event_body_round_trips_after_the_hostile_ones(service: Any) -> None:
    admin = await service.new_key("backend", admin=True)
    body = {"event": "post.created", "id": "evt-1", "data": {"nested": [[[{"ok": True}]]]}}
    async with service.client(admin) as client:
        accepted = ok_data(
            await client.post("/api/events", content=json.dumps(body), headers=JSON), 202
        )
    assert accepted["id"] == "evt-1"
