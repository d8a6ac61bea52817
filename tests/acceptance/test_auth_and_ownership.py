"""API keys and ownership: who may call the API and whose webhooks they see."""

from __future__ import annotations

from typing import Any

import httpx

from bellhook.runtime import utc_now
from tests.support import error_of, ok_data

HOOK = "https://example.com/hook"


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"url": HOOK, "events": ["post.created"], "description": "mine"}
    body.update(fields)
    return ok_data(await client.post("/api/webhooks", json=body), 201)  # type: ignore[no-any-return]


def all_routes(webhook_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every /api route with a request that would succeed for the webhook's owner."""
    item = f"/api/webhooks/{webhook_id}"
    return [
        ("GET", "/api/webhooks", None),
        ("POST", "/api/webhooks", {"url": HOOK, "events": ["post.created"]}),
        ("GET", item, None),
        ("PUT", item, {"description": "changed"}),
        ("PATCH", item, {"description": "changed"}),
        ("DELETE", item, None),
        ("GET", f"{item}/secret", None),
        ("GET", "/api/event-types", None),
    ]


async def assert_unchanged(service: Any, owner_token: str, webhook: dict[str, Any]) -> None:
    async with service.client(owner_token) as client:
        got = ok_data(await client.get(f"/api/webhooks/{webhook['id']}"))
        listed = (await client.get("/api/webhooks")).json()["data"]
    assert got == {k: v for k, v in webhook.items() if k != "secret"}
    assert [w["id"] for w in listed] == [webhook["id"]]


# --- authentication -------------------------------------------------------------------


def _bad_headers(valid: str) -> list[tuple[str, dict[str, str]]]:
    prefix, key, key_id_part, random_part = valid.split("_", 3)
    assert (prefix, key) == ("bhk", "key")
    tampered = random_part[:-1] + ("A" if random_part[-1] != "A" else "B")
    return [
        ("missing", {}),
        ("empty", {"Authorization": ""}),
        ("no scheme", {"Authorization": valid}),
        ("basic scheme", {"Authorization": f"Basic {valid}"}),
        ("token scheme", {"Authorization": f"Token {valid}"}),
        ("bearer without key", {"Authorization": "Bearer"}),
        ("malformed key", {"Authorization": "Bearer not-an-api-key"}),
        ("malformed prefix", {"Authorization": f"Bearer xyz_key_{key_id_part}_{random_part}"}),
        ("truncated key", {"Authorization": f"Bearer bhk_key_{key_id_part}"}),
        (
            "unknown key id",
            {"Authorization": f"Bearer bhk_key_0000000000zzzzzzzzzzzzzz_{random_part}"},
        ),
        ("wrong secret part", {"Authorization": f"Bearer bhk_key_{key_id_part}_{tampered}"}),
        ("key with extra text", {"Authorization": f"Bearer {valid}x"}),
    ]


async def test_bad_credentials_get_401_on_every_route(service: Any) -> None:
    token = await service.new_key("alice")
    async with service.client(token) as client:
        webhook = await create(client)
    cases = _bad_headers(token)
    for label, headers in cases:
        async with httpx.AsyncClient(base_url=service.base_url, headers=headers) as anon:
            for method, path, body in all_routes(webhook["id"]):
                resp = await anon.request(method, path, json=body)
                error = error_of(resp, 401)
                assert error["code"] == "unauthorized", (label, method, path)
                assert token not in resp.text
    await assert_unchanged(service, token, webhook)


async def test_a_valid_key_works_with_any_scheme_case(service: Any) -> None:
    token = await service.new_key("alice")
    async with httpx.AsyncClient(
        base_url=service.base_url, headers={"Authorization": f"bearer {token}"}
    ) as client:
        assert (await client.get("/api/webhooks")).status_code == 200


async def test_revoked_key_gets_401(service: Any) -> None:
    token = await service.new_key("alice")
    other = await service.new_key("alice")
    async with service.client(token) as client:
        webhook = await create(client)
        assert (await client.get("/api/webhooks")).status_code == 200

    key_id = await service.runtime.keys.authenticate(token)
    await service.runtime.keys.revoke(key_id.key_id, now=utc_now())

    async with service.client(token) as client:
        for method, path, body in all_routes(webhook["id"]):
            resp = await client.request(method, path, json=body)
            assert error_of(resp, 401)["code"] == "unauthorized", (method, path)
    # Another key of the same owner still works and still sees the webhook.
    await assert_unchanged(service, other, webhook)


async def test_event_types_requires_auth(service: Any) -> None:
    async with service.client() as anon:
        assert error_of(await anon.get("/api/event-types"), 401)["code"] == "unauthorized"
    async with service.client(await service.new_key("alice")) as client:
        assert (await client.get("/api/event-types")).status_code == 200


async def test_healthz_needs_no_key(service: Any) -> None:
    async with service.client() as anon:
        assert (await anon.get("/healthz")).status_code == 200


# --- ownership -------------------------------------------------------------------------


async def test_other_owner_gets_404_everywhere_and_an_empty_list(service: Any) -> None:
    alice = await service.new_key("alice")
    bob = await service.new_key("bob")
    async with service.client(alice) as client:
        webhook = await create(client)
    item = f"/api/webhooks/{webhook['id']}"
    missing = "wh_0000000000000000000000000"

    async with service.client(bob) as client:
        listed = await client.get("/api/webhooks")
        assert listed.status_code == 200, listed.text
        assert listed.json()["data"] == []
        assert listed.json()["pagination"]["nextCursor"] is None
        assert webhook["id"] not in listed.text

        requests: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", item, None),
            ("PUT", item, {"description": "bob was here"}),
            ("PUT", item, {"status": "disabled"}),
            ("PATCH", item, {"url": "https://attacker.example/hook"}),
            ("PATCH", item, {}),
            ("DELETE", item, None),
            ("GET", f"{item}/secret", None),
        ]
        for method, path, body in requests:
            resp = await client.request(method, path, json=body)
            error = error_of(resp, 404)
            assert error["code"] == "not_found", (method, path)
            # Indistinguishable from a webhook that does not exist at all.
            resp_missing = await client.request(
                method, path.replace(webhook["id"], missing), json=body
            )
            error_missing = error_of(resp_missing, 404)
            assert error["message"].replace(webhook["id"], missing) == error_missing["message"]
            assert "mine" not in resp.text and HOOK not in resp.text

    await assert_unchanged(service, alice, webhook)


async def test_webhooks_belong_to_the_owner_not_the_key(service: Any) -> None:
    first = await service.new_key("alice")
    second = await service.new_key("alice")
    async with service.client(first) as client:
        webhook = await create(client)
    async with service.client(second) as client:
        got = ok_data(await client.get(f"/api/webhooks/{webhook['id']}"))
        assert got["id"] == webhook["id"]
        listed = (await client.get("/api/webhooks")).json()["data"]
        assert [w["id"] for w in listed] == [webhook["id"]]
        assert (
            ok_data(await client.get(f"/api/webhooks/{webhook['id']}/secret"))["secret"]
            == webhook["secret"]
        )


async def test_lists_are_separated_by_owner(service: Any) -> None:
    alice = await service.new_key("alice")
    bob = await service.new_key("bob")
    async with service.client(alice) as a, service.client(bob) as b:
        a_ids = {(await create(a))["id"] for _ in range(3)}
        b_ids = {(await create(b))["id"] for _ in range(2)}
        a_listed = {w["id"] for w in (await a.get("/api/webhooks")).json()["data"]}
        b_listed = {w["id"] for w in (await b.get("/api/webhooks")).json()["data"]}
    assert a_listed == a_ids
    assert b_listed == b_ids


async def test_admin_can_read_and_manage_any_webhook(service: Any) -> None:
    alice = await service.new_key("alice")
    admin = await service.new_key("ops", admin=True)
    async with service.client(alice) as client:
        webhook = await create(client)
        other = await create(client, description="to delete")
    item = f"/api/webhooks/{webhook['id']}"

    async with service.client(admin) as client:
        got = ok_data(await client.get(item))
        assert got == {k: v for k, v in webhook.items() if k != "secret"}
        updated = ok_data(await client.put(item, json={"status": "disabled"}))
        assert updated["status"] == "disabled"
        assert updated["description"] == "mine"
        patched = ok_data(await client.patch(item, json={"description": "by ops"}))
        assert patched["description"] == "by ops"
        resp = await client.delete(f"/api/webhooks/{other['id']}")
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"success": True}

    async with service.client(alice) as client:
        got = ok_data(await client.get(item))
        assert got["status"] == "disabled"
        assert got["description"] == "by ops"
        error_of(await client.get(f"/api/webhooks/{other['id']}"), 404)
        listed = (await client.get("/api/webhooks")).json()["data"]
        assert [w["id"] for w in listed] == [webhook["id"]]


async def test_non_admin_key_of_another_owner_is_not_an_admin(service: Any) -> None:
    """An owner whose name looks privileged gains nothing without --admin."""
    alice = await service.new_key("alice")
    fake_admin = await service.new_key("admin")
    async with service.client(alice) as client:
        webhook = await create(client)
    async with service.client(fake_admin) as client:
        error_of(await client.get(f"/api/webhooks/{webhook['id']}"), 404)
