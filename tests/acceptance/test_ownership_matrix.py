"""Ownership matrix: every webhook route refuses another owner's webhook with a 404.

Owner A has a webhook with a delivery; owner B tries every ``/api/webhooks/{id}…``
route on it and gets the same 404 envelope as for an id that does not exist, and
A's webhook, secret and delivery log are left exactly as they were. Admin-only
routes answer 403 to every non-admin key.

Nothing here may send a delivery: after setup the fake DNS answers loopback for
A's host, which the policy refuses, and an autouse guard fails the test if
anything dials an address other than loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import httpx
import pytest

from tests.support import ok_data

PUBLIC = "93.184.216.34"
A_HOST = "a-hooks.example.test"
LOOPBACK = frozenset({ip_address("127.0.0.1"), ip_address("::1")})
MISSING_WEBHOOK = "wh_0000000000doesnotexist000"
MISSING_DELIVERY = "dlv_000000000doesnotexist000"

# Every route under /api/webhooks/{webhook_id}: (method, path, body).
WEBHOOK_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/webhooks/{webhook_id}", None),
    ("PUT", "/api/webhooks/{webhook_id}", {"description": "taken", "status": "disabled"}),
    ("PATCH", "/api/webhooks/{webhook_id}", {"url": "https://b.example.test/steal"}),
    ("DELETE", "/api/webhooks/{webhook_id}", None),
    ("POST", "/api/webhooks/{webhook_id}/test", {"event": "post.created"}),
    ("GET", "/api/webhooks/{webhook_id}/secret", None),
    ("GET", "/api/webhooks/{webhook_id}/stats", None),
    ("POST", "/api/webhooks/{webhook_id}/secret/rotate", {"secret": "chosen-by-b-0123456789"}),
    ("GET", "/api/webhooks/{webhook_id}/deliveries", None),
    ("GET", "/api/webhooks/{webhook_id}/deliveries/{delivery_id}", None),
    ("POST", "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", None),
    ("POST", "/api/webhooks/{webhook_id}/recover", {"since": "2000-01-01T00:00:00Z"}),
]
ROUTE_IDS = [
    f"{m} {p.removeprefix('/api/webhooks/{webhook_id}') or '/'}" for m, p, _ in WEBHOOK_ROUTES
]
DELIVERY_ROUTES = [r for r in WEBHOOK_ROUTES if "{delivery_id}" in r[1]]


class SwitchableDns:
    """Public answers; once ``rebind()`` is called, loopback (refused) for A's host."""

    def __init__(self) -> None:
        self.rebound = False

    def rebind(self) -> None:
        self.rebound = True

    async def resolve(self, host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if self.rebound and host == A_HOST else [PUBLIC]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Refuse, loudly, any outgoing connection that is not to loopback."""
    import socket

    violations: list[object] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and ip_address(str(address[0])) not in LOOPBACK:
            violations.append(address)
            raise AssertionError(f"test tried to connect to {address!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield violations
    assert violations == []


@dataclass
class World:
    service: Any
    a: str  # owner A's key
    b: str  # owner B's key
    admin: str
    a_webhook: dict[str, Any]
    a_secret: str
    a_delivery: str
    b_webhook: dict[str, Any]
    b_delivery: str


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"success", "error"}, body
    assert body["success"] is False
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code, error
    return error


async def snapshot(world: World) -> dict[str, Any]:
    """Everything owner A can see about their webhook."""
    webhook_id = world.a_webhook["id"]
    async with world.service.client(world.a) as client:
        webhook = ok_data(await client.get(f"/api/webhooks/{webhook_id}"))
        secret = ok_data(await client.get(f"/api/webhooks/{webhook_id}/secret"))
        log = ok_data(await client.get(f"/api/webhooks/{webhook_id}/deliveries"))
        detail = ok_data(
            await client.get(f"/api/webhooks/{webhook_id}/deliveries/{world.a_delivery}")
        )
    return {"webhook": webhook, "secret": secret, "log": log, "detail": detail}


@pytest.fixture
async def world(serve: Any) -> World:
    dns = SwitchableDns()
    service = await serve(resolver=dns)
    a = await service.new_key("owner-a")
    b = await service.new_key("owner-b")
    admin = await service.new_key("bellamy-backend", admin=True)
    hook = {"events": ["post.created"], "secret": "owner-a-secret-0123456789"}
    async with service.client(a) as client:
        a_webhook = ok_data(
            await client.post("/api/webhooks", json={**hook, "url": f"https://{A_HOST}/hook"}),
            201,
        )
    async with service.client(b) as client:
        b_webhook = ok_data(
            await client.post(
                "/api/webhooks",
                json={"url": "https://b-hooks.example.test/hook", "events": ["post.created"]},
            ),
            201,
        )
    async with service.client(admin) as client:
        published = ok_data(
            await client.post(
                "/api/events",
                json={
                    "event": "post.created",
                    "audience": ["owner-a", "owner-b"],
                    "data": {"id": "post-1"},
                },
            ),
            202,
        )
    assert published["deliveries"] == 2
    dns.rebind()  # from now on any send to A's webhook would be refused by the policy
    async with service.client(a) as client:
        (a_delivery,) = ok_data(await client.get(f"/api/webhooks/{a_webhook['id']}/deliveries"))
    async with service.client(b) as client:
        (b_delivery,) = ok_data(await client.get(f"/api/webhooks/{b_webhook['id']}/deliveries"))
    return World(
        service,
        a,
        b,
        admin,
        a_webhook,
        hook["secret"],
        a_delivery["id"],
        b_webhook,
        b_delivery["id"],
    )


def path_of(template: str, webhook_id: str, delivery_id: str) -> str:
    return template.format(webhook_id=webhook_id, delivery_id=delivery_id)


# --- the matrix ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "template", "body"), WEBHOOK_ROUTES, ids=ROUTE_IDS)
async def test_another_owners_webhook_is_404(
    world: World, method: str, template: str, body: dict[str, Any] | None
) -> None:
    before = await snapshot(world)
    async with world.service.client(world.b) as client:
        theirs = await client.request(
            method, path_of(template, world.a_webhook["id"], world.a_delivery), json=body
        )
        missing = await client.request(
            method, path_of(template, MISSING_WEBHOOK, world.a_delivery), json=body
        )
    error = assert_error(theirs, 404, "not_found")
    # Indistinguishable from a webhook that does not exist, and nothing of A's leaks.
    assert_error(missing, 404, "not_found")
    assert error["message"] == assert_error(missing, 404, "not_found")["message"].replace(
        MISSING_WEBHOOK, world.a_webhook["id"]
    )
    for leak in (world.a_secret, f"https://{A_HOST}/hook", "owner-a"):
        assert leak not in theirs.text
    assert await snapshot(world) == before


@pytest.mark.parametrize(
    ("method", "template", "body"),
    DELIVERY_ROUTES,
    ids=[f"{m} {p.rsplit('/', 1)[-1]}" for m, p, _ in DELIVERY_ROUTES],
)
async def test_another_owners_delivery_is_404_even_through_your_own_webhook(
    world: World, method: str, template: str, body: dict[str, Any] | None
) -> None:
    before = await snapshot(world)
    async with world.service.client(world.b) as client:
        resp = await client.request(
            method, path_of(template, world.b_webhook["id"], world.a_delivery), json=body
        )
        assert_error(resp, 404, "not_found")
        # And B's own delivery is reachable through B's webhook (the control).
        own = await client.get(
            path_of(
                "/api/webhooks/{webhook_id}/deliveries/{delivery_id}",
                world.b_webhook["id"],
                world.b_delivery,
            )
        )
        assert ok_data(own)["id"] == world.b_delivery
    assert await snapshot(world) == before


@pytest.mark.parametrize(("method", "template", "body"), WEBHOOK_ROUTES, ids=ROUTE_IDS)
async def test_the_owner_reaches_every_route(
    world: World, method: str, template: str, body: dict[str, Any] | None
) -> None:
    """The control for the matrix: the same requests work for owner A."""
    async with world.service.client(world.a) as client:
        resp = await client.request(
            method, path_of(template, world.a_webhook["id"], world.a_delivery), json=body
        )
    assert resp.status_code in (200, 201), resp.text
    assert resp.json()["success"] is True
    if template.endswith(("/test", "/retry")):
        # The send was attempted and refused by the destination policy (A's host
        # now resolves to loopback): nothing left this machine.
        assert resp.json()["data"]["error"] == "blocked_destination"


async def test_the_matrix_covers_every_webhook_route(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.service.base_url) as client:
        spec = (await client.get("/openapi.json")).json()
    documented = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        if path.startswith("/api/webhooks/{webhook_id}")
        for method in operations
    }
    assert documented == {(m, p) for m, p, _ in WEBHOOK_ROUTES}


# --- admin-only routes ------------------------------------------------------------------


async def test_non_admin_keys_get_403_on_every_admin_route(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.service.base_url) as client:
        spec = (await client.get("/openapi.json")).json()
    admin_routes = sorted(
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        if path.startswith("/api/events")
        for method in operations
    )
    assert ("POST", "/api/events") in admin_routes
    event = {"event": "post.created", "audience": "*", "data": {"id": "post-2"}}
    bodies = {"/api/events": event, "/api/events/batch": {"events": [event]}}
    before = await snapshot(world)
    for key in (world.a, world.b):
        async with world.service.client(key) as client:
            for method, path in admin_routes:
                resp = await client.request(method, path, json=bodies.get(path, event))
                error = assert_error(resp, 403, "forbidden")
                assert "admin" in error["message"]
    # Nothing was published: A's delivery log is as it was.
    assert await snapshot(world) == before
    # The admin key itself is accepted (the control).
    async with world.service.client(world.admin) as client:
        resp = await client.post("/api/events", json=event)
    assert resp.status_code == 202, resp.text


async def test_admin_keys_manage_every_webhook(world: World) -> None:
    async with world.service.client(world.admin) as client:
        got = ok_data(await client.get(f"/api/webhooks/{world.a_webhook['id']}"))
    assert got["id"] == world.a_webhook["id"]
