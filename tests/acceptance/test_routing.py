"""Who gets an event (audience rules), idempotent ingest, and ingest validation.

Positive cases are proven at the receivers; negative ones by the delivery log
(deliveries are created with the event, in one transaction, so no log entry means
no delivery ever) and by a barrier: with ``per_webhook_concurrency=1`` a webhook's
deliveries go out oldest first, one at a time, so once a later "*" sentinel event
has arrived at a receiver, nothing published before it is still on its way there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.support import (
    Receiver,
    create_webhook,
    deliveries,
    error_of,
    ok_data,
    publish,
    receiver_pool,
    settled,
    status,
)

MAX_SAFE = 2**53 - 1


class World:
    """One delivering app, one receiver, webhooks of several owners on their own paths."""

    def __init__(self, svc: Any, rx: Receiver, admin: httpx.AsyncClient) -> None:
        self.svc = svc
        self.rx = rx
        self.admin = admin
        self.clients: dict[str, httpx.AsyncClient] = {"ops": admin}
        self.hooks: dict[str, dict[str, Any]] = {}  # path name -> webhook
        self.owner_of: dict[str, str] = {}

    async def client(self, owner: str) -> httpx.AsyncClient:
        if owner not in self.clients:
            self.clients[owner] = self.svc.client(await self.svc.new_key(owner))
        return self.clients[owner]

    async def hook(self, name: str, owner: str, events: list[str]) -> dict[str, Any]:
        hook = await create_webhook(await self.client(owner), self.rx.url(f"/{name}"), events)
        self.hooks[name] = hook
        self.owner_of[name] = owner
        return hook

    def got(self, name: str, event_id: str) -> int:
        return len([h for h in self.rx.hits if h.path == f"/{name}" and h.event_id == event_id])

    async def logged(self, name: str, event_id: str) -> bool:
        client = self.clients[self.owner_of[name]]
        return any(
            d["eventId"] == event_id for d in await deliveries(client, self.hooks[name]["id"])
        )

    async def barrier(self) -> None:
        """Publish a "*" event to every active webhook and wait until each has it."""
        active = [n for n in self.hooks if await self._active(n)]
        accepted = await publish(self.admin, "post.created", {"id": "sentinel"}, audience="*")
        subscribed = [n for n in active if _subscribes(self.hooks[n], "post.created")]
        assert accepted["deliveries"] == len(subscribed)
        paths = {f"/{n}" for n in subscribed}
        await self.rx.wait_until(
            lambda hits: paths <= {h.path for h in hits if h.event_id == accepted["id"]},
            what=f"the sentinel at {sorted(paths)}",
        )

    async def _active(self, name: str) -> bool:
        client = self.clients[self.owner_of[name]]
        resp = await client.get(f"/api/webhooks/{self.hooks[name]['id']}")
        return resp.status_code == 200 and resp.json()["data"]["status"] == "active"

    async def expect(self, event_id: str, receivers: set[str]) -> None:
        """``event_id`` reaches exactly ``receivers``, once each."""
        paths = {f"/{n}" for n in receivers}
        await self.rx.wait_until(
            lambda hits: paths <= {h.path for h in hits if h.event_id == event_id},
            what=f"{event_id} at {sorted(paths)}",
        )
        await self.barrier()
        for name in self.hooks:
            want = 1 if name in receivers else 0
            assert self.got(name, event_id) == want, (name, event_id)
            if name in receivers or await self._exists(name):
                assert await self.logged(name, event_id) == (name in receivers), (name, event_id)

    async def _exists(self, name: str) -> bool:
        client = self.clients[self.owner_of[name]]
        return (await client.get(f"/api/webhooks/{self.hooks[name]['id']}")).status_code == 200

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()


def _subscribes(hook: dict[str, Any], event: str) -> bool:
    return "*" in hook["events"] or event in hook["events"]


@pytest.fixture
async def world(serve: Callable[..., Any]) -> AsyncIterator[World]:
    async with receiver_pool() as start:
        rx = await start()
        svc = await serve(
            worker=True,
            dev_mode=True,
            retry_schedule="0.2,0.4,0.8",
            delivery_timeout=2.0,
            per_webhook_concurrency=1,
        )
        w = World(svc, rx, svc.client(await svc.new_key("ops", admin=True)))
        try:
            yield w
        finally:
            await w.close()


@pytest.fixture
async def people(world: World) -> World:
    """admin: posts; alice: posts, comments only; bob: posts, everything."""
    await world.hook("admin", "ops", ["post.created"])
    await world.hook("alice", "alice", ["post.created"])
    await world.hook("alice_comments", "alice", ["comment.created"])
    await world.hook("bob", "bob", ["post.created"])
    await world.hook("bob_all", "bob", ["*"])
    return world


# --- audience ----------------------------------------------------------------------------------


async def test_no_audience_reaches_only_admin_webhooks(people: World) -> None:
    accepted = await publish(people.admin, "post.created", {"id": "p1"})
    assert accepted["deliveries"] == 1
    await people.expect(accepted["id"], {"admin"})


async def test_audience_list_reaches_those_owners_and_admin(people: World) -> None:
    accepted = await publish(people.admin, "post.created", {"id": "p2"}, audience=["alice"])
    assert accepted["deliveries"] == 2
    await people.expect(accepted["id"], {"admin", "alice"})

    accepted = await publish(
        people.admin, "post.created", {"id": "p3"}, audience=["bob", "carol", "bob"]
    )
    assert accepted["deliveries"] == 3
    await people.expect(accepted["id"], {"admin", "bob", "bob_all"})


async def test_wildcard_audience_reaches_every_subscriber(people: World) -> None:
    accepted = await publish(people.admin, "post.created", {"id": "p4"}, audience="*")
    assert accepted["deliveries"] == 4
    await people.expect(accepted["id"], {"admin", "alice", "bob", "bob_all"})


async def test_event_types_select_webhooks(people: World) -> None:
    accepted = await publish(people.admin, "comment.created", {"id": "c1"}, audience="*")
    assert accepted["deliveries"] == 2
    await people.expect(accepted["id"], {"alice_comments", "bob_all"})

    accepted = await publish(people.admin, "user.registered", {"id": "u1"}, audience="*")
    assert accepted["deliveries"] == 1
    await people.expect(accepted["id"], {"bob_all"})

    accepted = await publish(people.admin, "user.registered", {"id": "u2"}, audience=["alice"])
    assert accepted["deliveries"] == 0
    await people.expect(accepted["id"], set())


async def test_audience_naming_no_owner_reaches_admin_webhooks_only(people: World) -> None:
    accepted = await publish(people.admin, "post.created", {"id": "p5"}, audience=["ops2"])
    assert accepted["deliveries"] == 1
    await people.expect(accepted["id"], {"admin"})
    accepted = await publish(people.admin, "post.created", {"id": "p6"}, audience=[])
    assert accepted["deliveries"] == 1
    await people.expect(accepted["id"], {"admin"})


async def test_disabled_webhooks_get_nothing(people: World) -> None:
    bob = people.clients["bob"]
    resp = await bob.put(f"/api/webhooks/{people.hooks['bob']['id']}", json={"status": "disabled"})
    assert ok_data(resp)["status"] == "disabled"
    accepted = await publish(people.admin, "post.created", {"id": "p7"}, audience="*")
    assert accepted["deliveries"] == 3
    await people.expect(accepted["id"], {"admin", "alice", "bob_all"})


async def test_deleted_webhooks_get_nothing(people: World) -> None:
    alice = people.clients["alice"]
    resp = await alice.delete(f"/api/webhooks/{people.hooks['alice']['id']}")
    assert resp.status_code == 200 and resp.json() == {"success": True}, resp.text
    accepted = await publish(people.admin, "post.created", {"id": "p8"}, audience="*")
    assert accepted["deliveries"] == 3
    await people.expect(accepted["id"], {"admin", "bob", "bob_all"})
    error_of(await alice.get(f"/api/webhooks/{people.hooks['alice']['id']}/deliveries"), 404)


async def test_a_webhook_deleted_with_retries_pending_gets_no_more(world: World) -> None:
    doomed = await world.hook("doomed", "ops", ["post.created"])
    await world.hook("other", "ops", ["post.created"])
    world.rx.respond = status(500)
    accepted = await publish(world.admin, "post.created", {"id": "p9"})
    assert accepted["deliveries"] == 2
    await world.rx.wait_until(
        lambda hits: {h.path for h in hits if h.event_id == accepted["id"]} >= {"/doomed", "/other"}
    )
    resp = await world.admin.delete(f"/api/webhooks/{doomed['id']}")
    assert resp.status_code == 200, resp.text
    deleted_at = len([h for h in world.rx.hits if h.path == "/doomed"])
    # "other" keeps being retried (four attempts over ~1.4 s); "doomed" gets nothing more.
    await world.rx.wait_until(
        lambda hits: len([h for h in hits if h.path == "/other"]) >= 4, what="all retries"
    )
    # At most the attempt that may have been in flight at the deletion.
    assert len([h for h in world.rx.hits if h.path == "/doomed"]) <= deleted_at + 1


# --- idempotency -------------------------------------------------------------------------------


async def test_same_id_twice_is_one_event_and_one_delivery(world: World) -> None:
    await world.hook("admin", "ops", ["post.created"])
    first = await publish(world.admin, "post.created", {"v": 1}, id="evt_dup_1")
    assert first == {"id": "evt_dup_1", "deliveries": 1, "duplicate": False}
    second = await publish(world.admin, "post.created", {"v": 2}, id="evt_dup_1")
    assert second == {"id": "evt_dup_1", "deliveries": 1, "duplicate": True}
    await world.expect("evt_dup_1", {"admin"})
    (hit,) = world.rx.of("evt_dup_1")
    assert hit.json()["data"] == {"v": 1}  # the first one wins
    logged = await settled(world.admin, world.hooks["admin"]["id"], "evt_dup_1", "succeeded")
    assert logged["attemptCount"] == 1


async def test_idempotency_key_header(world: World) -> None:
    await world.hook("admin", "ops", ["post.created"])
    key = {"Idempotency-Key": "order-7-created"}
    first = await publish(world.admin, "post.created", {"v": 1}, headers=key)
    second = await publish(world.admin, "post.created", {"v": 1}, headers=key)
    assert first["duplicate"] is False
    assert second["duplicate"] is True
    assert second["id"] == first["id"]
    assert second["deliveries"] == first["deliveries"] == 1
    await world.expect(first["id"], {"admin"})
    assert len(world.rx.of(first["id"])) == 1
    # A different key is a different event.
    third = await publish(world.admin, "post.created", {"v": 1}, headers={"Idempotency-Key": "x"})
    assert third["id"] != first["id"]
    assert third["duplicate"] is False


async def test_concurrent_duplicates_make_one_event(world: World) -> None:
    await world.hook("admin", "ops", ["post.created"])
    results = await asyncio.gather(
        *(publish(world.admin, "post.created", {"v": n}, id="evt_race") for n in range(10))
    )
    assert {r["id"] for r in results} == {"evt_race"}
    assert sorted(r["duplicate"] for r in results) == [False] + [True] * 9
    assert {r["deliveries"] for r in results} == {1}
    await world.expect("evt_race", {"admin"})


async def test_without_id_every_post_is_a_new_event(world: World) -> None:
    await world.hook("admin", "ops", ["post.created"])
    a = await publish(world.admin, "post.created", {"v": 1})
    b = await publish(world.admin, "post.created", {"v": 1})
    assert a["id"] != b["id"]
    assert not a["duplicate"] and not b["duplicate"]
    await world.expect(a["id"], {"admin"})
    await world.expect(b["id"], {"admin"})


# --- ingest validation ------------------------------------------------------------------------


async def test_only_admin_keys_publish(people: World) -> None:
    alice = people.clients["alice"]
    error_of(await alice.post("/api/events", json={"event": "post.created", "data": {}}), 403)
    async with people.svc.client() as anonymous:
        resp = await anonymous.post("/api/events", json={"event": "post.created", "data": {}})
        error_of(resp, 401)
    async with people.svc.client("not-a-key") as bad:
        resp = await bad.post("/api/events", json={"event": "post.created", "data": {}})
        error_of(resp, 401)
    assert await deliveries(people.admin, people.hooks["admin"]["id"]) == []


def _raw(body: str) -> dict[str, Any]:
    return {"content": body.encode(), "headers": {"Content-Type": "application/json"}}


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("unknown event type", '{"event": "post.exploded", "data": {}}'),
        ("wildcard event type", '{"event": "*", "data": {}}'),
        ("NaN", '{"event": "post.created", "data": {"x": NaN}}'),
        ("Infinity", '{"event": "post.created", "data": {"x": Infinity}}'),
        ("-Infinity", '{"event": "post.created", "data": {"a": [1, -Infinity]}}'),
        ("2**53", f'{{"event": "post.created", "data": {{"x": {2**53}}}}}'),
        ("-2**53", f'{{"event": "post.created", "data": {{"x": {-(2**53)}}}}}'),
        ("nested big int", f'{{"event": "post.created", "data": {{"a": {{"b": [{10**30}]}}}}}}'),
        ("too deep", '{"event": "post.created", "data": ' + '{"a": ' * 100 + "1" + "}" * 101),
        ("data array", '{"event": "post.created", "data": [1, 2]}'),
        ("data string", '{"event": "post.created", "data": "hello"}'),
        ("data null", '{"event": "post.created", "data": null}'),
        ("data missing", '{"event": "post.created"}'),
        ("event missing", '{"data": {}}'),
        ("unknown field", '{"event": "post.created", "data": {}, "colour": "red"}'),
        ("bad audience", '{"event": "post.created", "data": {}, "audience": "alice"}'),
        ("bad timestamp", '{"event": "post.created", "data": {}, "timestamp": "soon"}'),
        ("bad id", '{"event": "post.created", "data": {}, "id": "has space"}'),
    ],
)
async def test_invalid_events_are_refused(people: World, name: str, raw: str) -> None:
    resp = await people.admin.post("/api/events", **_raw(raw))
    error = error_of(resp, 422)
    assert isinstance(error["details"], list)
    # Nothing was scheduled for anyone.
    for name, hook in people.hooks.items():
        assert await deliveries(people.clients[people.owner_of[name]], hook["id"]) == [], name


async def test_boundaries_that_are_accepted(world: World) -> None:
    await world.hook("admin", "ops", ["post.created"])
    accepted = await publish(world.admin, "post.created", {"x": MAX_SAFE, "y": -MAX_SAFE})
    await world.expect(accepted["id"], {"admin"})
    (hit,) = world.rx.of(accepted["id"])
    assert hit.json()["data"] == {"x": MAX_SAFE, "y": -MAX_SAFE}
    assert str(MAX_SAFE).encode() in hit.body


async def test_data_size_limit(world: World) -> None:
    await world.hook("admin", "ops", ["post.created"])
    limit = 256 * 1024
    overhead = len(json.dumps({"s": ""}, separators=(",", ":")))
    at_limit = {"s": "x" * (limit - overhead)}
    over = {"s": "x" * (limit - overhead + 1)}
    resp = await world.admin.post("/api/events", json={"event": "post.created", "data": over})
    error_of(resp, 422)
    resp = await world.admin.post("/api/events", json={"event": "post.created", "data": at_limit})
    accepted = ok_data(resp, 202)
    assert accepted["deliveries"] == 1
    await world.expect(accepted["id"], {"admin"})
    (hit,) = world.rx.of(accepted["id"])
    assert hit.json()["data"] == at_limit


async def test_explicit_timestamp_is_kept(world: World) -> None:
    await world.hook("admin", "ops", ["post.created"])
    accepted = await publish(
        world.admin, "post.created", {"id": "p"}, timestamp="2023-12-31T23:00:00+01:00"
    )
    await world.expect(accepted["id"], {"admin"})
    (hit,) = world.rx.of(accepted["id"])
    assert hit.json()["timestamp"] == "2023-12-31T22:00:00.000Z"
