"""GET /api/webhooks pagination: newest first, ?limit= and opaque ?cursor=."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support import error_of

HOOK = "https://example.com/hook"


async def create_many(client: httpx.AsyncClient, count: int, tag: str = "") -> list[str]:
    """Creates ``count`` webhooks one after the other; their ids, oldest first."""
    ids = []
    for n in range(count):
        resp = await client.post(
            "/api/webhooks",
            json={
                "url": HOOK,
                "events": ["post.created"],
                "description": f"{tag}{n}",
            },
        )
        assert resp.status_code == 201, resp.text
        ids.append(resp.json()["data"]["id"])
    return ids


async def page(client: httpx.AsyncClient, **params: Any) -> tuple[list[dict[str, Any]], Any]:
    resp = await client.get("/api/webhooks", params=params)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"success", "data", "pagination"}
    assert body["success"] is True
    assert set(body["pagination"]) == {"nextCursor"}
    return body["data"], body["pagination"]["nextCursor"]


async def walk(client: httpx.AsyncClient, limit: int) -> list[list[dict[str, Any]]]:
    pages = []
    cursor = None
    for _ in range(100):  # bounded: a cursor that never ends fails the test
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        items, cursor = await page(client, **params)
        pages.append(items)
        if cursor is None:
            return pages
        assert isinstance(cursor, str) and cursor
    pytest.fail("pagination did not end")


def assert_newest_first(items: list[dict[str, Any]]) -> None:
    stamps = [datetime.fromisoformat(w["createdAt"]) for w in items]
    assert stamps == sorted(stamps, reverse=True)


async def test_pages_cover_everything_newest_first(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create_many(client, 7)
        pages = await walk(client, 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [w["id"] for p in pages for w in p]
    assert len(seen) == len(set(seen)), "duplicates across pages"
    assert seen == list(reversed(created)), "gap or wrong order"
    assert_newest_first([w for p in pages for w in p])
    assert [w["description"] for w in pages[0]] == ["6", "5", "4"]


@pytest.mark.parametrize(
    ("limit", "sizes"),
    [(1, [1] * 7), (2, [2, 2, 2, 1]), (6, [6, 1]), (7, [7]), (8, [7]), (250, [7])],
)
async def test_page_sizes(service: Any, limit: int, sizes: list[int]) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create_many(client, 7)
        pages = await walk(client, limit)
    assert [len(p) for p in pages] == sizes
    assert [w["id"] for p in pages for w in p] == list(reversed(created))


async def test_default_page_and_empty_list(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        items, cursor = await page(client)
        assert items == []
        assert cursor is None
        created = await create_many(client, 3)
        items, cursor = await page(client)
    assert [w["id"] for w in items] == list(reversed(created))
    assert cursor is None


async def test_last_full_page_has_null_cursor(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        await create_many(client, 6)
        pages = await walk(client, 3)
    assert [len(p) for p in pages] == [3, 3]


async def test_other_owners_webhooks_never_appear_in_pages(service: Any) -> None:
    async with (
        service.client(await service.new_key("alice")) as alice,
        service.client(await service.new_key("bob")) as bob,
    ):
        mine: list[str] = []
        theirs: list[str] = []
        for _ in range(4):  # interleaved creation
            mine += await create_many(alice, 1, "a")
            theirs += await create_many(bob, 1, "b")
        alice_pages = await walk(alice, 3)
        bob_pages = await walk(bob, 3)
    assert [w["id"] for p in alice_pages for w in p] == list(reversed(mine))
    assert [w["id"] for p in bob_pages for w in p] == list(reversed(theirs))


async def test_cursor_survives_deletion_and_new_webhooks(service: Any) -> None:
    async with service.client(await service.new_key("alice")) as client:
        created = await create_many(client, 7)
        first, cursor = await page(client, limit=3)
        assert cursor is not None
        # The item the cursor points at disappears, and a newer one is added.
        resp = await client.delete(f"/api/webhooks/{first[-1]['id']}")
        assert resp.status_code == 200, resp.text
        newer = await create_many(client, 1, "new")
        second, cursor = await page(client, limit=3, cursor=cursor)
        third, cursor = await page(client, limit=3, cursor=cursor)
    assert cursor is None
    rest = [w["id"] for w in second + third]
    assert rest == list(reversed(created))[3:]
    assert newer[0] not in rest


GARBAGE_CURSORS = [
    "garbage",
    "!!!!",
    "%%%",
    base64.urlsafe_b64encode(b"[]").decode(),
    base64.urlsafe_b64encode(b'["not a date", "wh_x"]').decode(),
    base64.urlsafe_b64encode(b'{"a": 1}').decode(),
    base64.urlsafe_b64encode(b"\xff\xfe\x00garbage").decode(),
    base64.urlsafe_b64encode(json.dumps(["2024-01-01T00:00:00", "wh_x"]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps([1, 2, 3]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps([1, "wh_x"]).encode()).decode(),
    "x" * 600,
]


@pytest.mark.parametrize("cursor", GARBAGE_CURSORS)
async def test_garbage_cursor_is_422(service: Any, cursor: str) -> None:
    async with service.client(await service.new_key("alice")) as client:
        await create_many(client, 2)
        error = error_of(await client.get("/api/webhooks", params={"cursor": cursor}), 422)
    assert error["code"] == "validation_error"
    assert any(d.get("field") == "cursor" for d in error["details"]), error


@pytest.mark.parametrize("limit", ["0", "-1", "1000", "abc", "1.5", ""])
async def test_out_of_range_limit_is_422(service: Any, limit: str) -> None:
    async with service.client(await service.new_key("alice")) as client:
        error = error_of(await client.get(f"/api/webhooks?limit={limit}"), 422)
    assert error["code"] == "validation_error"
    assert any(d.get("field") == "limit" for d in error["details"]), error
    assert "limit" in error["message"]


def _cursor(created_at: str, item_id: str) -> str:
    raw = json.dumps([created_at, item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("9999-12-31T23:59:59-14:00", "wh_x"),
        _cursor("0001-01-01T00:00:00+14:00", "wh_x"),
        _cursor("2024-01-01T00:00:00+00:00", "wh_\u0000"),
    ],
    ids=["after-year-9999-in-utc", "before-year-1-in-utc", "nul-in-id"],
)
async def test_crafted_cursor_is_never_a_server_error(service: Any, cursor: str) -> None:
    async with service.client(await service.new_key("alice")) as client:
        await create_many(client, 2)
        resp = await client.get("/api/webhooks", params={"cursor": cursor})
    assert resp.status_code in (200, 422), resp.text
    if resp.status_code == 422:
        error = error_of(resp, 422)
        assert any(d.get("field") == "cursor" for d in error["details"]), error
    else:
        assert resp.json()["success"] is True
