"""The policy resolver inside a real aiohttp client, against a loopback server.

Every name is answered by a fake resolver, and a guard on ``socket.connect``
fails the test if anything tries to reach an address other than 127.0.0.1 or
::1, so a bug here cannot send traffic anywhere else.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bellhook.delivery.resolver import (
    BlockedByPolicy,
    DestinationGuard,
    PolicyResolver,
    SystemResolver,
    blocked_destination_of,
)
from bellhook.domain.destination import (
    DEV_SWITCH_HINT,
    DestinationPolicy,
    DestinationUnresolvable,
)
from bellhook.errors import DestinationRefused
from tests.support import ConnectLog, guard_loopback

PROD = DestinationPolicy()
DEV = DestinationPolicy(dev_mode=True)
LOOPBACK_ALLOWED = DestinationPolicy(allowed_networks=(IPv4Network("127.0.0.0/8"),))
HOST = "hooks.example.test"


class FakeResolver:
    """Answers from a script, one answer per call (the last one repeats)."""

    def __init__(self, *answers: list[str] | OSError) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, OSError):
            raise answer
        return list(answer)


class Receiver:
    """An aiohttp.web server on 127.0.0.1 that counts connections and requests."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.requests: list[tuple[str, str, bytes]] = []
        self.redirect_to = ""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests.append((request.method, request.path, await request.read()))
        if request.path == "/redirect":
            return web.Response(status=307, headers={"Location": self.redirect_to})
        return web.Response(text="ok")

    @property
    def untouched(self) -> bool:
        return self.connections == 0 and not self.requests


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectLog]:
    """Refuse, loudly, any outgoing connection that is not to loopback; record the rest."""
    log = guard_loopback(monkeypatch)
    yield log
    assert log.violations == []


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    server = web.Server(state.handle)

    def protocol() -> web.RequestHandler:
        state.connections += 1
        return server()

    listener = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        await server.shutdown(1)
        listener.close()
        await listener.wait_closed()


def session_for(resolver: aiohttp.abc.AbstractResolver, **kwargs: Any) -> aiohttp.ClientSession:
    # Short timeouts: a regression must fail fast, not hang the suite.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=resolver),
        timeout=aiohttp.ClientTimeout(total=10),
        **kwargs,
    )


# --- (a) a refused name: nothing leaves the client ------------------------------


async def test_refused_resolution_blocks_the_post_before_connecting(receiver: Receiver) -> None:
    fake = FakeResolver(["127.0.0.1"])
    async with session_for(PolicyResolver(fake, PROD)) as session:
        with pytest.raises(aiohttp.ClientConnectorDNSError) as caught:
            await session.post(f"https://{HOST}:{receiver.port}/hook", json={"event": "x"})

    refusal = blocked_destination_of(caught.value)
    assert refusal is not None
    assert refusal.details == [{"field": "url", "rule": "loopback_address"}]
    assert "host resolves to 127.0.0.1, a loopback address" in refusal.message
    assert DEV_SWITCH_HINT in refusal.message
    # aiohttp's own error is an ordinary ClientError carrying our OSError.
    assert isinstance(caught.value, aiohttp.ClientError)
    assert isinstance(caught.value.os_error, BlockedByPolicy)
    assert fake.calls == [(HOST, receiver.port)]
    assert receiver.untouched


# --- (b) an allowed local target is reached, at the resolved address ------------


@pytest.mark.parametrize("policy", [DEV, LOOPBACK_ALLOWED], ids=["dev_mode", "allowed_networks"])
async def test_allowed_local_target_is_reached(
    receiver: Receiver, policy: DestinationPolicy, loopback_only: ConnectLog
) -> None:
    fake = FakeResolver(["127.0.0.1"])
    async with (
        session_for(PolicyResolver(fake, policy)) as session,
        session.post(f"http://{HOST}:{receiver.port}/hook", data=b"payload") as response,
    ):
        assert response.status == 200
        assert await response.text() == "ok"
    assert receiver.requests == [("POST", "/hook", b"payload")]
    assert receiver.connections == 1
    assert fake.calls == [(HOST, receiver.port)]
    # The client dialled the checked address, and through the guard.
    assert loopback_only.seen == [("127.0.0.1", receiver.port)]


# --- (c) DNS rebinding between registration and delivery ------------------------


async def test_rebinding_after_registration_is_blocked_at_connect_time(
    receiver: Receiver,
) -> None:
    # Public when registering (checked, never connected to), loopback after.
    rebinding = FakeResolver(["93.184.216.34"], ["127.0.0.1"])
    guard = DestinationGuard(PROD, rebinding)
    url = f"https://{HOST}:{receiver.port}/hook"

    registered = await guard.check_registration(url)
    assert registered.addresses == (IPv4Address("93.184.216.34"),)
    # From here on the resolver can only ever answer loopback.
    assert rebinding.answers == [["127.0.0.1"]]

    guard.check_before_send(url)  # no DNS, so nothing to rebind here
    async with session_for(guard.connector_resolver(), middlewares=(guard.middleware,)) as session:
        with pytest.raises(aiohttp.ClientConnectorDNSError) as caught:
            await session.post(url, json={"event": "x"}, allow_redirects=False)

    refusal = blocked_destination_of(caught.value)
    assert refusal is not None
    assert refusal.details[0]["rule"] == "loopback_address"
    assert len(rebinding.calls) == 2
    assert receiver.untouched


# --- IP literals: aiohttp skips the resolver, the guard must not -----------------


async def test_aiohttp_skips_the_resolver_for_ip_literals(receiver: Receiver) -> None:
    """Why ``check_before_send`` exists: the resolver never sees a literal."""
    fake = FakeResolver(OSError("the resolver must not be consulted"))
    guard = DestinationGuard(PROD, fake)
    url = f"http://127.0.0.1:{receiver.port}/hook"

    with pytest.raises(DestinationRefused) as caught:
        guard.check_before_send(url)
    assert caught.value.details[0]["rule"] in {"https_required", "loopback_address"}
    with pytest.raises(DestinationRefused) as caught:
        guard.check_before_send(url.replace("http://", "https://"))
    assert caught.value.details[0]["rule"] == "loopback_address"

    # Without the pre-check the request goes straight to the literal.
    async with (
        session_for(guard.connector_resolver()) as session,
        session.post(url, data=b"x") as response,
    ):
        assert response.status == 200
    assert fake.calls == []
    assert len(receiver.requests) == 1


async def test_middleware_blocks_ip_literals(receiver: Receiver) -> None:
    guard = DestinationGuard(PROD, FakeResolver(OSError("unused")))
    async with session_for(guard.connector_resolver(), middlewares=(guard.middleware,)) as session:
        with pytest.raises(DestinationRefused) as caught:
            await session.post(f"https://[::ffff:127.0.0.1]:{receiver.port}/hook")
    assert blocked_destination_of(caught.value) is caught.value
    assert caught.value.details[0]["rule"] == "loopback_address"
    assert receiver.untouched


async def test_middleware_checks_every_redirect_hop(receiver: Receiver) -> None:
    # Refused even in dev mode. (The loopback_only guard would stop the connect
    # anyway; aiohttp strips URL userinfo before middlewares run, so a
    # credentials redirect could not be used to show this.)
    receiver.redirect_to = f"http://0.0.0.0:{receiver.port}/final"
    guard = DestinationGuard(DEV, FakeResolver(["127.0.0.1"]))
    async with session_for(guard.connector_resolver(), middlewares=(guard.middleware,)) as session:
        with pytest.raises(DestinationRefused) as caught:
            await session.post(f"http://{HOST}:{receiver.port}/redirect", data=b"x")
    assert caught.value.details[0]["rule"] == "unspecified_address"
    assert [path for _, path, _ in receiver.requests] == ["/redirect"]


async def test_check_before_send_judges_what_the_client_parses() -> None:
    guard = DestinationGuard(PROD, FakeResolver(OSError("unused")))
    target = guard.check_before_send("https://Hooks.Example.com:8443/x?y=1")
    assert (target.host, target.port, target.literal_ip) == ("hooks.example.com", 8443, None)
    for url in (
        "https://127\u30020\u30020\u30021/",  # yarl folds this to 127.0.0.1
        "https://0x7f.1/",
        "https://user:pw@hooks.example.com/",
        "http://hooks.example.com/",
    ):
        with pytest.raises(DestinationRefused):
            guard.check_before_send(url)


# --- DNS failures are not blocks -------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [socket.gaierror(socket.EAI_NONAME, "Name or service not known"), []],
    ids=["nxdomain", "empty"],
)
async def test_dns_failure_is_a_connection_error_not_a_block(
    receiver: Receiver, answer: list[str] | OSError
) -> None:
    async with session_for(PolicyResolver(FakeResolver(answer), PROD)) as session:
        with pytest.raises(aiohttp.ClientConnectorDNSError) as caught:
            await session.post(f"https://{HOST}:{receiver.port}/hook")
    assert blocked_destination_of(caught.value) is None
    assert receiver.untouched


# --- PolicyResolver on its own ---------------------------------------------------


async def test_policy_resolver_answers_only_when_every_address_passes() -> None:
    mixed = PolicyResolver(FakeResolver(["93.184.216.34", "10.0.0.7"]), PROD)
    with pytest.raises(BlockedByPolicy) as caught:
        await mixed.resolve(HOST, 443, socket.AF_UNSPEC)
    assert caught.value.refusal.details[0]["rule"] == "private_address"

    public = PolicyResolver(FakeResolver(["93.184.216.34", "2606:4700::1"]), PROD)
    results = await public.resolve(HOST, 443, socket.AF_UNSPEC)
    assert [(r["host"], r["family"], r["port"], r["hostname"]) for r in results] == [
        ("93.184.216.34", socket.AF_INET, 443, HOST),
        ("2606:4700::1", socket.AF_INET6, 443, HOST),
    ]
    only_v4 = await public.resolve(HOST, 443, socket.AF_INET)
    assert [r["host"] for r in only_v4] == ["93.184.216.34"]

    v4_answer = PolicyResolver(FakeResolver(["93.184.216.34"]), PROD)
    with pytest.raises(OSError, match="requested family") as no_family:
        await v4_answer.resolve(HOST, 443, socket.AF_INET6)
    assert blocked_destination_of(no_family.value) is None


async def test_policy_resolver_allows_local_ranges_when_configured() -> None:
    resolver = PolicyResolver(FakeResolver(["127.0.0.1"]), LOOPBACK_ALLOWED)
    results = await resolver.resolve(HOST, 8080, socket.AF_UNSPEC)
    assert [r["host"] for r in results] == ["127.0.0.1"]


async def test_system_resolver_on_a_numeric_host() -> None:
    # A numeric host is parsed locally by getaddrinfo: no DNS query is sent.
    assert await SystemResolver().resolve("127.0.0.1", 443) == ["127.0.0.1"]
    with pytest.raises(DestinationRefused):
        await PROD.check_resolved("https://hooks.example.test/", _NumericOnly())


class _NumericOnly:
    """Delegates to SystemResolver, but only ever with a loopback literal."""

    async def resolve(self, host: str, port: int) -> list[str]:
        return await SystemResolver(timeout=5).resolve("127.0.0.1", port)


# --- blocked_destination_of ------------------------------------------------------


def test_blocked_destination_of_walks_the_chain() -> None:
    refusal = DestinationRefused("no", details=[{"field": "url", "rule": "loopback_address"}])
    assert blocked_destination_of(refusal) is refusal
    assert blocked_destination_of(BlockedByPolicy(refusal)) is refusal
    assert blocked_destination_of(ValueError("unrelated")) is None
    assert blocked_destination_of(DestinationUnresolvable("dns down")) is None

    try:
        try:
            raise refusal
        except DestinationRefused as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert blocked_destination_of(outer) is refusal

    try:
        try:
            raise refusal
        except DestinationRefused:
            raise RuntimeError("suppressed") from None
    except RuntimeError as suppressed:
        assert blocked_destination_of(suppressed) is None

    group = ExceptionGroup("many", [ValueError("x"), BlockedByPolicy(refusal)])
    assert blocked_destination_of(group) is refusal

    looped = RuntimeError("cycle")
    looped.__context__ = looped
    assert blocked_destination_of(looped) is None
