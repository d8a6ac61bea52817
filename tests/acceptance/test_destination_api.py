"""The destination (SSRF) rules end to end, through the real API and the real dispatcher.

Public destinations are only ever *resolved* by fake resolvers, never connected
to: an autouse guard on ``socket.connect`` fails the test if anything dials an
address other than 127.0.0.1 or ::1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bellhook.config import Settings
from bellhook.domain.destination import DEV_SWITCH_HINT
from tests.support import error_of, ok_data

PUBLIC = "93.184.216.34"
HOST = "hooks.example.test"
LOOPBACK = frozenset({ip_address("127.0.0.1"), ip_address("::1")})
WAIT = 30.0


# --- helpers --------------------------------------------------------------------------


class ScriptedResolver:
    """A fake DNS: fixed answers per host, one that can be switched (rebinding).

    Records every answer it gives, so a test can prove what the sender was offered.
    """

    def __init__(self, answers: dict[str, list[str] | OSError] | None = None) -> None:
        self.answers: dict[str, list[str] | OSError] = dict(answers or {})
        self.given: list[tuple[str, int, tuple[str, ...]]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        answer = self.answers.get(host, [PUBLIC])
        if isinstance(answer, OSError):
            raise answer
        self.given.append((host, port, tuple(answer)))
        return list(answer)


async def register(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.post("/api/webhooks", json={"url": url, "events": ["post.created"]})


async def eventually(
    probe: Callable[[], Awaitable[Any]], until: Callable[[Any], bool], *, what: str
) -> Any:
    """Poll ``probe()`` (the delivery log cannot be awaited) until ``until`` holds."""
    deadline = time.monotonic() + WAIT
    while True:
        value = await probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {WAIT} s; last: {value}")
        await asyncio.sleep(0.05)


async def first_attempt(client: httpx.AsyncClient, webhook_id: str) -> dict[str, Any]:
    """The first attempt of the webhook's only delivery, once the dispatcher made it."""

    async def probe() -> list[dict[str, Any]]:
        listed = ok_data(await client.get(f"/api/webhooks/{webhook_id}/deliveries"))
        if not listed or listed[0]["attemptCount"] == 0:
            return []
        detail = ok_data(
            await client.get(f"/api/webhooks/{webhook_id}/deliveries/{listed[0]['id']}")
        )
        return list(detail["attempts"])

    attempts = await eventually(probe, bool, what="the first delivery attempt")
    return dict(attempts[0])


async def publish(service: Any, owner: str) -> None:
    admin = await service.new_key("bellamy-backend", admin=True)
    async with service.client(admin) as client:
        accepted = ok_data(
            await client.post(
                "/api/events",
                json={"event": "post.created", "audience": [owner], "data": {"id": "post-1"}},
            ),
            202,
        )
    assert accepted["deliveries"] == 1


@dataclass
class TcpReceiver:
    """A raw TCP listener on 127.0.0.1 that only counts who connects."""

    port: int = 0
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)


@pytest.fixture
async def tcp_receiver() -> AsyncIterator[TcpReceiver]:
    state = TcpReceiver()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            state.received += await reader.read(65536)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


# --- refused at registration ----------------------------------------------------------

REFUSED = [
    ("http", "http://hooks.example.com/hook", "https_required"),
    ("ftp", "ftp://hooks.example.com/hook", "https_required"),
    ("credentials", "https://user:pw@hooks.example.com/hook", "credentials_in_url"),
    ("not absolute", "javascript:alert(1)", "invalid_url"),
    ("backslash", "https://hooks.example.com\\@evil.example/", "invalid_url"),
    ("no host", "https:///hook", "host_required"),
    ("bad port", "https://hooks.example.com:99999/", "invalid_port"),
    ("loopback", "https://127.0.0.1/hook", "loopback_address"),
    ("localhost", "https://localhost:8443/hook", "loopback_address"),
    ("ipv6 loopback", "https://[::1]/hook", "loopback_address"),
    ("ipv4-mapped loopback", "https://[::ffff:127.0.0.1]/hook", "loopback_address"),
    ("nat64 loopback", "https://[64:ff9b::7f00:1]/hook", "loopback_address"),
    ("hex loopback", "https://0x7f000001/hook", "loopback_address"),
    ("decimal loopback", "https://2130706433/hook", "loopback_address"),
    ("octal loopback", "https://0177.0.0.1/hook", "loopback_address"),
    ("private 10/8", "https://10.1.2.3/hook", "private_address"),
    ("private 172.16/12", "https://172.16.5.4/hook", "private_address"),
    ("private 192.168/16", "https://192.168.0.10/hook", "private_address"),
    ("cloud metadata", "https://169.254.169.254/latest/meta-data/", "link_local_address"),
    ("ipv6 link-local", "https://[fe80::1]/hook", "link_local_address"),
    ("unique local", "https://[fd00::1]/hook", "unique_local_address"),
    ("carrier-grade nat", "https://100.64.0.1/hook", "shared_address"),
    ("unspecified", "https://0.0.0.0/hook", "unspecified_address"),
    ("ipv6 unspecified", "https://[::]/hook", "unspecified_address"),
    ("multicast", "https://224.0.0.1/hook", "multicast_address"),
    ("broadcast", "https://255.255.255.255/hook", "broadcast_address"),
    ("documentation", "https://192.0.2.1/hook", "documentation_address"),
    ("name to private", "https://internal.example.test/hook", "private_address"),
    ("name to metadata", "https://metadata.example.test/hook", "link_local_address"),
    ("mixed answer", "https://mixed.example.test/hook", "private_address"),
    ("unresolvable", "https://nxdomain.example.test/hook", "unresolvable_host"),
]
LOCAL_RULES = {
    "loopback_address",
    "private_address",
    "link_local_address",
    "unique_local_address",
}


def fake_dns() -> ScriptedResolver:
    return ScriptedResolver(
        {
            "localhost": ["127.0.0.1", "::1"],
            "internal.example.test": ["10.0.0.7"],
            "metadata.example.test": ["169.254.169.254"],
            "mixed.example.test": [PUBLIC, "10.0.0.7"],
            "nxdomain.example.test": OSError(-2, "Name or service not known"),
        }
    )


@pytest.mark.parametrize(("url", "rule"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
async def test_registration_refuses_with_a_422_naming_the_rule(
    serve: Callable[..., Any], url: str, rule: str
) -> None:
    service = await serve(resolver=fake_dns())
    token = await service.new_key("acme")
    async with service.client(token) as client:
        error = error_of(await register(client, url), 422)
        assert error["details"][0]["rule"] == rule
        assert error["details"][0]["field"] == "url"
        expected_code = (
            "destination_unresolvable" if rule == "unresolvable_host" else "destination_refused"
        )
        assert error["code"] == expected_code
        if rule in LOCAL_RULES:
            # A local target names both ways to allow it.
            assert DEV_SWITCH_HINT in error["message"]
            assert "BELLHOOK_ALLOWED_NETWORKS" in error["message"]
        if rule == "https_required":
            assert "BELLHOOK_DEV_MODE=true" in error["message"]
        assert "pw@" not in error["message"]  # credentials are never echoed
        assert ok_data(await client.get("/api/webhooks")) == []  # nothing was stored


async def test_updating_to_a_refused_url_is_refused_and_changes_nothing(
    serve: Callable[..., Any],
) -> None:
    service = await serve(resolver=fake_dns())
    token = await service.new_key("acme")
    async with service.client(token) as client:
        created = ok_data(await register(client, "https://hooks.example.com/hook"), 201)
        for method in ("PUT", "PATCH"):
            for url, rule in [
                ("https://localhost/hook", "loopback_address"),
                ("https://169.254.169.254/", "link_local_address"),
                ("http://hooks.example.com/hook", "https_required"),
            ]:
                resp = await client.request(
                    method, f"/api/webhooks/{created['id']}", json={"url": url}
                )
                assert error_of(resp, 422)["details"][0]["rule"] == rule
        current = ok_data(await client.get(f"/api/webhooks/{created['id']}"))
    assert current["url"] == "https://hooks.example.com/hook"


async def test_a_localhost_url_names_the_dev_mode_switch(serve: Callable[..., Any]) -> None:
    service = await serve(resolver=fake_dns())
    token = await service.new_key("acme")
    async with service.client(token) as client:
        error = error_of(await register(client, "https://localhost:3000/webhook"), 422)
    assert error["details"] == [{"field": "url", "rule": "loopback_address"}]
    assert "--dev" in error["message"]
    assert "BELLHOOK_DEV_MODE=true" in error["message"]


# --- allowed by configuration ---------------------------------------------------------


async def test_dev_mode_allows_plain_http_to_loopback(serve: Callable[..., Any]) -> None:
    service = await serve(dev_mode=True, resolver=fake_dns())
    token = await service.new_key("acme")
    async with service.client(token) as client:
        for url in (
            "http://127.0.0.1:3000/webhook",
            "http://localhost:3000/webhook",
            "http://[::1]:3000/webhook",
            "https://10.0.0.7/webhook",
        ):
            assert ok_data(await register(client, url), 201)["url"] == url
        # Even in development mode some targets are never allowed.
        for url, rule in [
            ("http://0.0.0.0:3000/", "unspecified_address"),
            ("http://224.0.0.1/", "multicast_address"),
            ("http://user:pw@127.0.0.1:3000/", "credentials_in_url"),
        ]:
            assert error_of(await register(client, url), 422)["details"][0]["rule"] == rule


async def test_allowed_networks_allow_a_loopback_https_url(serve: Callable[..., Any]) -> None:
    service = await serve(allowed_networks="127.0.0.0/8", resolver=fake_dns())
    token = await service.new_key("acme")
    async with service.client(token) as client:
        for url in ("https://127.0.0.1:8443/hook", "https://127.1.2.3/hook", "https://localhost/x"):
            resp = await register(client, url)
            if url == "https://localhost/x":
                # localhost also answers ::1, which 127.0.0.0/8 does not cover.
                assert error_of(resp, 422)["details"][0]["rule"] == "loopback_address"
            else:
                assert ok_data(resp, 201)["url"] == url
        # Only https, and only the networks listed.
        for url, rule in [
            ("http://127.0.0.1:8443/hook", "https_required"),
            ("https://10.0.0.1/hook", "private_address"),
            ("https://[::1]/hook", "loopback_address"),
        ]:
            assert error_of(await register(client, url), 422)["details"][0]["rule"] == rule


# --- DNS rebinding, end to end ---------------------------------------------------------


async def test_dns_rebinding_after_registration_is_blocked_at_delivery(
    serve: Callable[..., Any], tcp_receiver: TcpReceiver
) -> None:
    resolver = ScriptedResolver({HOST: [PUBLIC]})
    service = await serve(resolver=resolver, worker=True, dev_mode=False)
    token = await service.new_key("acme")
    url = f"https://{HOST}:{tcp_receiver.port}/hook"
    async with service.client(token) as client:
        webhook = ok_data(await register(client, url), 201)
        assert resolver.given == [(HOST, tcp_receiver.port, (PUBLIC,))]

        # The attacker's DNS now answers loopback, where a receiver is listening on
        # the very port the URL names. From here on that is the only answer given.
        resolver.answers[HOST] = ["127.0.0.1"]
        registered = len(resolver.given)
        await publish(service, "acme")
        attempt = await first_attempt(client, webhook["id"])

    assert attempt["error"] == "blocked_destination"
    assert attempt["statusCode"] is None
    assert "127.0.0.1" in attempt["errorMessage"]
    assert "loopback" in attempt["errorMessage"]
    at_delivery = resolver.given[registered:]
    assert at_delivery, "the sender must resolve the name again at delivery time"
    assert all(given == (HOST, tcp_receiver.port, ("127.0.0.1",)) for given in at_delivery)
    assert tcp_receiver.connections == 0
    assert not tcp_receiver.received


# --- TLS is always verified ------------------------------------------------------------


@dataclass
class TlsReceiver:
    port: int
    cert_path: Path
    requests: list[str]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            # Valid for both names the test uses: only the issuer is untrusted.
            x509.SubjectAlternativeName(
                [x509.DNSName(HOST), x509.IPAddress(ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> AsyncIterator[TlsReceiver]:
    cert_path, key_path = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    requests: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield TlsReceiver(port, cert_path, requests)
    finally:
        await runner.cleanup()


async def test_the_tls_receiver_works_for_a_client_that_trusts_it(
    tls_receiver: TlsReceiver,
) -> None:
    """Control: the receiver is sound; only its issuer is unknown to bellhook."""
    trusting = ssl.create_default_context(cafile=str(tls_receiver.cert_path))
    async with httpx.AsyncClient(verify=trusting) as client:
        resp = await client.post(f"https://127.0.0.1:{tls_receiver.port}/control", content=b"{}")
    assert resp.status_code == 200
    assert tls_receiver.requests == ["/control"]


@pytest.mark.parametrize("target", ["ip", "name"])
async def test_a_self_signed_receiver_fails_with_error_kind_tls(
    serve: Callable[..., Any], tls_receiver: TlsReceiver, target: str
) -> None:
    resolver = ScriptedResolver({HOST: ["127.0.0.1"]})
    service = await serve(allowed_networks="127.0.0.0/8", worker=True, resolver=resolver)
    host = "127.0.0.1" if target == "ip" else HOST
    url = f"https://{host}:{tls_receiver.port}/hook"
    token = await service.new_key("acme")
    async with service.client(token) as client:
        webhook = ok_data(await register(client, url), 201)
        await publish(service, "acme")
        attempt = await first_attempt(client, webhook["id"])
        # A test send (the synchronous path) fails the same way.
        tested = ok_data(await client.post(f"/api/webhooks/{webhook['id']}/test", json={}))

    assert attempt["error"] == "tls"
    assert attempt["statusCode"] is None
    assert "certificate" in attempt["errorMessage"].lower()
    assert tested["success"] is False
    assert tested["error"] == "tls"
    assert tls_receiver.requests == []  # the handshake failed: no request was sent


def test_there_is_no_setting_that_turns_tls_verification_off() -> None:
    # The Kafka client's TLS settings name the broker's CA and bellhook's own client
    # certificate: they add trust material, and options that switch the check off are
    # refused (tests/unit/test_kafka_messages.py).
    suspicious = ("verify", "insecure", "tls", "ssl", "cert", "ca_")
    fields = [f for f in Settings.model_fields if any(word in f for word in suspicious)]
    assert [f for f in fields if not f.startswith("kafka_ssl_")] == []
    assert [f for f in fields if any(w in f for w in ("verify", "insecure"))] == []
