"""The destination policy (SSRF rules), judged without any network traffic.

Public destinations are "resolved" by fake resolvers; nothing here connects.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bellhook.domain.destination import (
    DEV_SWITCH_HINT,
    MAX_URL_LENGTH,
    DestinationPolicy,
    DestinationUnresolvable,
    ResolvedTarget,
    WebhookTarget,
    parse_networks,
)
from bellhook.errors import ConfigurationError, DestinationRefused

PROD = DestinationPolicy()
DEV = DestinationPolicy(dev_mode=True)


class FakeResolver:
    """Answers from a script, one answer per call (the last one repeats)."""

    def __init__(self, *answers: list[str] | OSError) -> None:
        self._answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        answer = self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]
        if isinstance(answer, OSError):
            raise answer
        return list(answer)


def refusal(policy: DestinationPolicy, url: str) -> DestinationRefused:
    with pytest.raises(DestinationRefused) as caught:
        policy.check_url(url)
    return caught.value


def rule_of(exc: DestinationRefused) -> str:
    assert exc.details == [{"field": "url", "rule": exc.details[0]["rule"]}]
    return str(exc.details[0]["rule"])


# --- refused addresses ------------------------------------------------------

REFUSED_IPV4 = [
    ("127.0.0.1", "loopback_address"),
    ("127.255.255.254", "loopback_address"),
    ("10.0.0.1", "private_address"),
    ("172.16.0.1", "private_address"),
    ("172.31.255.255", "private_address"),
    ("192.168.1.1", "private_address"),
    ("169.254.169.254", "link_local_address"),
    ("169.254.0.1", "link_local_address"),
    ("100.64.0.1", "shared_address"),
    ("100.127.255.255", "shared_address"),
    ("0.0.0.0", "unspecified_address"),
    ("0.1.2.3", "this_network_address"),
    ("224.0.0.1", "multicast_address"),
    ("239.255.255.250", "multicast_address"),
    ("255.255.255.255", "broadcast_address"),
    ("240.0.0.1", "reserved_address"),
    ("192.0.2.1", "documentation_address"),
    ("198.51.100.7", "documentation_address"),
    ("203.0.113.9", "documentation_address"),
    ("198.18.0.1", "benchmark_address"),
    ("198.19.255.255", "benchmark_address"),
    ("192.0.0.8", "reserved_address"),
    ("192.88.99.1", "reserved_address"),
]

REFUSED_IPV6 = [
    ("::1", "loopback_address"),
    ("::", "unspecified_address"),
    ("fe80::1", "link_local_address"),
    ("febf:ffff::1", "link_local_address"),
    ("fc00::1", "unique_local_address"),
    ("fd12:3456:789a::1", "unique_local_address"),
    ("fec0::1", "site_local_address"),
    ("ff02::1", "multicast_address"),
    ("ff05::1:3", "multicast_address"),
    ("2001:db8::1", "documentation_address"),
    ("3fff::1", "documentation_address"),
    ("2001:2::1", "benchmark_address"),
    ("2001::1", "reserved_address"),  # Teredo
    ("100::1", "reserved_address"),  # discard-only
    ("64:ff9b:1::a00:1", "reserved_address"),  # local-use NAT64
    ("::ffff:0:7f00:1", "reserved_address"),  # IPv4-translated
    ("4000::1", "reserved_address"),  # outside 2000::/3
]

# IPv6 forms that carry an IPv4 address: judged by the IPv4 they embed.
REFUSED_EMBEDDED = [
    ("::ffff:127.0.0.1", "127.0.0.1", "loopback_address"),
    ("::ffff:10.0.0.1", "10.0.0.1", "private_address"),
    ("::ffff:169.254.169.254", "169.254.169.254", "link_local_address"),
    ("::ffff:0.0.0.0", "0.0.0.0", "unspecified_address"),
    ("::ffff:100.64.0.1", "100.64.0.1", "shared_address"),
    ("::127.0.0.1", "127.0.0.1", "loopback_address"),
    ("::10.0.0.1", "10.0.0.1", "private_address"),
    ("::169.254.169.254", "169.254.169.254", "link_local_address"),
    ("::2", "0.0.0.2", "this_network_address"),
    ("64:ff9b::127.0.0.1", "127.0.0.1", "loopback_address"),
    ("64:ff9b::a9fe:a9fe", "169.254.169.254", "link_local_address"),
    ("64:ff9b::c0a8:101", "192.168.1.1", "private_address"),
    ("2002:7f00:1::", "127.0.0.1", "loopback_address"),
    ("2002:a00:1::1", "10.0.0.1", "private_address"),
    ("2002:a9fe:a9fe::", "169.254.169.254", "link_local_address"),
    ("2002:e000:1::", "224.0.0.1", "multicast_address"),
]


@pytest.mark.parametrize(("address", "rule"), REFUSED_IPV4)
def test_refused_ipv4_literals(address: str, rule: str) -> None:
    exc = refusal(PROD, f"https://{address}/hook")
    assert rule_of(exc) == rule
    assert f"host resolves to {address}, " in exc.message


@pytest.mark.parametrize(("address", "rule"), REFUSED_IPV6)
def test_refused_ipv6_literals(address: str, rule: str) -> None:
    exc = refusal(PROD, f"https://[{address}]:8443/hook")
    assert rule_of(exc) == rule
    assert f"host resolves to {ip_address(address)}, " in exc.message


@pytest.mark.parametrize(("address", "embedded", "rule"), REFUSED_EMBEDDED)
def test_ipv6_embedding_a_refused_ipv4_is_judged_by_the_ipv4(
    address: str, embedded: str, rule: str
) -> None:
    exc = refusal(PROD, f"https://[{address}]/")
    assert rule_of(exc) == rule
    assert f"which embeds {embedded}, " in exc.message


@pytest.mark.parametrize(
    ("address", "rule"),
    [(a, r) for a, r in REFUSED_IPV4] + [(a, r) for a, r in REFUSED_IPV6],
)
def test_check_address_refuses_the_same_categories(address: str, rule: str) -> None:
    with pytest.raises(DestinationRefused) as caught:
        PROD.check_address(ip_address(address))
    assert rule_of(caught.value) == rule


# --- numeric host tricks, caught without DNS ----------------------------------

NUMERIC_TRICKS = [
    ("http://2130706433/", "127.0.0.1"),
    ("http://0x7f.1/", "127.0.0.1"),
    ("http://0177.0.0.1/", "127.0.0.1"),
    ("http://127.1/", "127.0.0.1"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
    ("https://0x7f000001/", "127.0.0.1"),
    ("https://017700000001/", "127.0.0.1"),
    ("https://0X7F.0.0.1/", "127.0.0.1"),
    ("https://127.0.0.1./", "127.0.0.1"),
    ("https://127.0.1/", "127.0.0.1"),
    ("https://0x7f.0x0.0x0.0x1/", "127.0.0.1"),
    ("https://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254"),
    ("https://3232235777/", "192.168.1.1"),
    ("https://10.1/", "10.0.0.1"),
    ("https://0/", "0.0.0.0"),
    ("https://0x/", "0.0.0.0"),
    ("https://127\u30020\u30020\u30021/", "127.0.0.1"),  # ideographic full stops
    ("https://\uff11\uff12\uff17.0.0.1/", "127.0.0.1"),  # full-width digits
    ("https://[0:0:0:0:0:ffff:7f00:1]/", "::ffff:127.0.0.1"),
]


@pytest.mark.parametrize(("url", "address"), NUMERIC_TRICKS)
@pytest.mark.parametrize("policy", [PROD, DEV], ids=["prod", "dev"])
def test_numeric_hosts_are_decoded_without_dns(
    url: str, address: str, policy: DestinationPolicy
) -> None:
    """The URL is judged exactly as the address it spells (no resolver here)."""
    url = url.replace("http://", "https://")
    decoded = ip_address(address)
    try:
        policy.check_address(decoded)
    except DestinationRefused as expected:
        assert rule_of(refusal(policy, url)) == rule_of(expected)
    else:
        assert policy.check_url(url).literal_ip == decoded


@pytest.mark.parametrize(("url", "address"), NUMERIC_TRICKS)
def test_numeric_tricks_are_refused_in_production(url: str, address: str) -> None:
    exc = refusal(PROD, url.replace("http://", "https://"))
    assert rule_of(exc) in {
        "loopback_address",
        "private_address",
        "link_local_address",
        "unspecified_address",
    }
    decoded = ip_address(address)
    shown = decoded.ipv4_mapped if isinstance(decoded, IPv6Address) else decoded
    assert f"{shown}, a" in exc.message


@st.composite
def ipv4_spellings(draw: st.DrawFn) -> tuple[IPv4Address, str]:
    """An address and one of its inet_aton spellings (1-4 parts, any base)."""
    address = IPv4Address(draw(st.integers(0, 2**32 - 1)))
    count = draw(st.integers(1, 4))
    octets = list(address.packed)
    parts = [*octets[: count - 1], int.from_bytes(bytes(octets[count - 1 :]), "big")]
    rendered = []
    for part in parts:
        base = draw(st.sampled_from(["dec", "oct", "hex"]))
        if base == "oct" and part:
            rendered.append("0" + format(part, "o"))
        elif base == "hex":
            rendered.append("0x" + format(part, "x"))
        else:
            rendered.append(str(part))
    return address, ".".join(rendered)


@given(ipv4_spellings())
def test_ipv4_spellings_decode_like_inet_aton(case: tuple[IPv4Address, str]) -> None:
    address, spelling = case
    # inet_aton only parses the string locally; it does no lookup.
    assert IPv4Address(socket.inet_aton(spelling)) == address
    everything = DestinationPolicy(allowed_networks=(IPv4Network("0.0.0.0/0"),))
    try:
        target = everything.check_url(f"https://{spelling}/")
    except DestinationRefused as exc:
        # Only the never-allowed categories survive a 0.0.0.0/0 allowance.
        assert rule_of(exc) in {
            "unspecified_address",
            "this_network_address",
            "multicast_address",
            "broadcast_address",
        }
        assert f"host resolves to {address}, " in exc.message
    else:
        assert target.literal_ip == address
        assert target.host == str(address)


# --- URL syntax ---------------------------------------------------------------

SYNTAX_REFUSALS = [
    ("http://hooks.example.com/", "https_required"),
    ("ftp://hooks.example.com/", "https_required"),
    ("javascript://hooks.example.com/", "https_required"),
    ("hooks.example.com/hook", "invalid_url"),
    ("//hooks.example.com/hook", "invalid_url"),
    ("https:hooks.example.com", "invalid_url"),
    ("https://user:secret@hooks.example.com/", "credentials_in_url"),
    ("https://user@hooks.example.com/", "credentials_in_url"),
    ("https://:secret@hooks.example.com/", "credentials_in_url"),
    ("https://@hooks.example.com/", "credentials_in_url"),
    ("https://a@b@hooks.example.com/", "credentials_in_url"),
    ("https://evil.com%2f@127.0.0.1/", "credentials_in_url"),
    ("https://evil.com\\@127.0.0.1/", "invalid_url"),
    ("https://exa\tmple.com/", "invalid_url"),
    ("https://example.com\n/", "invalid_url"),
    (" https://example.com/", "invalid_url"),
    ("https://exa mple.com/", "invalid_url"),
    ("https://example.com\x00.evil/", "invalid_url"),
    ("https:///hook", "host_required"),
    ("https://:443/hook", "host_required"),
    ("https://?x=1", "host_required"),
    ("https://", "host_required"),
    ("https://[]/", "invalid_host"),
    ("https://hooks.example.com:0/", "invalid_port"),
    ("https://hooks.example.com:65536/", "invalid_port"),
    ("https://hooks.example.com:-1/", "invalid_port"),
    ("https://hooks.example.com:https/", "invalid_port"),
    ("https://hooks.example.com:\uff18\uff10/", "invalid_port"),
    ("https://::1/", "invalid_host"),
    ("https://[::1/", "invalid_host"),
    ("https://[::1]x/", "invalid_host"),
    ("https://[not-ipv6]/", "invalid_host"),
    ("https://[v1.fe]/", "invalid_host"),
    ("https://[fe80::1%25eth0]/", "invalid_host"),
    ("https://%31%32%37.0.0.1/", "invalid_host"),
    ("https://256.1.1.1/", "invalid_host"),
    ("https://1.2.3.4.5/", "invalid_host"),
    ("https://4294967296/", "invalid_host"),
    ("https://08.0.0.1/", "invalid_host"),
    ("https://1..2.3/", "invalid_host"),
    ("https://example.123/", "invalid_host"),
    ("https://a..example.com/", "invalid_host"),
    ("https://.example.com/", "invalid_host"),
    ("https://example.com../", "invalid_host"),
    ("https://exa*mple.com/", "invalid_host"),
    ("https://ex\u00adample.com/", "invalid_host"),  # soft hyphen
    ("https://ex\u200bample.com/", "invalid_host"),  # zero-width space
    ("https://evil.com\ufe6b127.0.0.1/", "invalid_host"),  # small commercial at
    ("https://127.0.0.1\ufe6bevil.com/", "invalid_host"),
    ("https://evil.com\uff1a80/", "invalid_host"),  # full-width colon
    ("https://" + "a" * 64 + ".com/", "invalid_host"),
]


@pytest.mark.parametrize(("url", "rule"), SYNTAX_REFUSALS)
def test_syntax_refusals(url: str, rule: str) -> None:
    assert rule_of(refusal(PROD, url)) == rule


def test_url_length_limit() -> None:
    prefix = "https://hooks.example.com/"
    longest = prefix + "a" * (MAX_URL_LENGTH - len(prefix))
    assert PROD.check_url(longest).host == "hooks.example.com"
    exc = refusal(PROD, longest + "a")
    assert rule_of(exc) == "url_too_long"
    assert str(MAX_URL_LENGTH) in exc.message


# --- accepted URLs (decision only: nothing connects) -------------------------

ACCEPTED = [
    ("https://hooks.example.com/hook", WebhookTarget("https", "hooks.example.com", 443, None)),
    (
        "HTTPS://Hooks.Example.COM:8443/x?y#z",
        WebhookTarget("https", "hooks.example.com", 8443, None),
    ),
    ("https://hooks.example.com.:1/", WebhookTarget("https", "hooks.example.com", 1, None)),
    ("https://hooks.example.com:65535", WebhookTarget("https", "hooks.example.com", 65535, None)),
    ("https://hooks.example.com:/", WebhookTarget("https", "hooks.example.com", 443, None)),
    ("https://my_host.example.com/", WebhookTarget("https", "my_host.example.com", 443, None)),
    ("https://b\u00fccher.example/", WebhookTarget("https", "xn--bcher-kva.example", 443, None)),
    ("https://fa\u00df.de/", WebhookTarget("https", "xn--fa-hia.de", 443, None)),
    ("https://\uff25xample.com/", WebhookTarget("https", "example.com", 443, None)),
    ("https://0x7f.example.com/", WebhookTarget("https", "0x7f.example.com", 443, None)),
    ("https://evil.com#@127.0.0.1", WebhookTarget("https", "evil.com", 443, None)),
    (
        "https://93.184.216.34/hook",
        WebhookTarget("https", "93.184.216.34", 443, IPv4Address("93.184.216.34")),
    ),
    ("https://8.8.8.8:8443/", WebhookTarget("https", "8.8.8.8", 8443, IPv4Address("8.8.8.8"))),
    (
        "https://[2606:4700::1]/hook",
        WebhookTarget("https", "2606:4700::1", 443, IPv6Address("2606:4700::1")),
    ),
    (
        "https://[2606:4700:0:0:0:0:0:1]:444/",
        WebhookTarget("https", "2606:4700::1", 444, IPv6Address("2606:4700::1")),
    ),
    # Wrappers around a public IPv4 are as public as what they wrap.
    (
        "https://[::ffff:93.184.216.34]/",
        WebhookTarget("https", "::ffff:5db8:d822", 443, IPv6Address("::ffff:93.184.216.34")),
    ),
    (
        "https://[64:ff9b::93.184.216.34]/",
        WebhookTarget("https", "64:ff9b::5db8:d822", 443, IPv6Address("64:ff9b::5db8:d822")),
    ),
    (
        "https://[2002:5db8:d822::1]/",
        WebhookTarget("https", "2002:5db8:d822::1", 443, IPv6Address("2002:5db8:d822::1")),
    ),
]


@pytest.mark.parametrize(("url", "expected"), ACCEPTED)
def test_accepted_urls(url: str, expected: WebhookTarget) -> None:
    assert PROD.check_url(url) == expected


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700::1"])
def test_public_addresses_pass_check_address(address: str) -> None:
    PROD.check_address(ip_address(address))


# --- development mode and allowed networks ----------------------------------

DEV_ALLOWED = [
    "http://127.0.0.1:8080/hook",
    "http://localhost:8080/hook",
    "http://[::1]:8080/",
    "https://10.0.0.1/",
    "http://192.168.1.20/",
    "http://172.16.0.1/",
    "http://169.254.169.254/",
    "http://[fe80::1]/",
    "http://[fd00::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",
]


@pytest.mark.parametrize("url", DEV_ALLOWED)
def test_dev_mode_allows_http_and_local_targets(url: str) -> None:
    DEV.check_url(url)


DEV_REFUSED = [
    ("http://user:pass@127.0.0.1/", "credentials_in_url"),
    ("http://0.0.0.0:8080/", "unspecified_address"),
    ("http://0/", "unspecified_address"),
    ("http://[::]:8080/", "unspecified_address"),
    ("http://[::ffff:0.0.0.0]/", "unspecified_address"),
    ("http://224.0.0.1/", "multicast_address"),
    ("http://[ff02::1]/", "multicast_address"),
    ("http://255.255.255.255/", "broadcast_address"),
    ("http://0.1.2.3/", "this_network_address"),
    ("ftp://127.0.0.1/", "https_required"),
    ("http://100.64.0.1/", "shared_address"),  # not a "local target"
    ("http://192.0.2.1/", "documentation_address"),
]


@pytest.mark.parametrize(("url", "rule"), DEV_REFUSED)
def test_dev_mode_still_refuses(url: str, rule: str) -> None:
    exc = refusal(DEV, url)
    assert rule_of(exc) == rule
    assert DEV_SWITCH_HINT not in exc.message


def test_allowed_networks_allow_chosen_ranges_in_production() -> None:
    policy = DestinationPolicy(
        allowed_networks=(IPv4Network("10.20.0.0/16"), IPv6Network("fd00:1::/32"))
    )
    policy.check_url("https://10.20.3.4/")
    policy.check_url("https://[fd00:1::5]/")
    policy.check_url("https://[::ffff:10.20.3.4]/")  # judged by the embedded IPv4
    assert rule_of(refusal(policy, "https://10.21.0.1/")) == "private_address"
    assert rule_of(refusal(policy, "https://[fd00:2::1]/")) == "unique_local_address"
    assert rule_of(refusal(policy, "http://10.20.3.4/")) == "https_required"


def test_allowed_networks_never_allow_the_hard_categories() -> None:
    policy = DestinationPolicy(
        allowed_networks=(IPv4Network("0.0.0.0/0"), IPv6Network("::/0")), dev_mode=True
    )
    policy.check_url("https://127.0.0.1/")
    policy.check_url("https://100.64.0.1/")
    for url in ("https://0.0.0.0/", "https://224.0.0.1/", "https://[::]/", "https://[ff02::1]/"):
        assert rule_of(refusal(policy, url)).endswith("_address")


# --- messages -----------------------------------------------------------------


def test_https_message() -> None:
    assert refusal(PROD, "http://hooks.example.com/").message.startswith(
        "webhook URLs must use https"
    )


def test_loopback_message_names_the_rule_and_the_dev_switch() -> None:
    exc = refusal(PROD, "https://127.0.0.1/")
    assert exc.message.startswith("host resolves to 127.0.0.1, a loopback address")
    assert DEV_SWITCH_HINT in exc.message
    assert DEV_SWITCH_HINT == (
        "start bellhook with --dev or BELLHOOK_DEV_MODE=true to allow local targets"
    )
    assert exc.code == "destination_refused"
    assert exc.details == [{"field": "url", "rule": "loopback_address"}]


@pytest.mark.parametrize(
    "url", ["https://10.0.0.1/", "https://169.254.169.254/", "https://[fd00::1]/"]
)
def test_local_refusals_name_the_dev_switch(url: str) -> None:
    assert DEV_SWITCH_HINT in refusal(PROD, url).message


@pytest.mark.parametrize("url", ["https://100.64.0.1/", "https://224.0.0.1/", "https://[::]/"])
def test_non_local_refusals_do_not_suggest_dev_mode(url: str) -> None:
    assert DEV_SWITCH_HINT not in refusal(PROD, url).message


@pytest.mark.parametrize(
    "url",
    [
        "https://alice:hunter2-s3cret@hooks.example.com/",
        "https://alice:hunter2-s3cret@127.0.0.1/",
        "http://alice:hunter2-s3cret@hooks.example.com/",
        "https://alice:hunter2-s3cret@hooks.example.com:99999/",
        "https://hunter2-s3cret@[::1/",
    ],
)
@pytest.mark.parametrize("policy", [PROD, DEV], ids=["prod", "dev"])
def test_messages_never_leak_userinfo(url: str, policy: DestinationPolicy) -> None:
    exc = refusal(policy, url)
    for text in (str(exc), exc.message, repr(exc.details), repr(exc.args)):
        assert "hunter2" not in text
        assert "alice" not in text


# --- resolution -----------------------------------------------------------------


async def test_check_resolved_requires_every_address_to_pass() -> None:
    resolver = FakeResolver(["93.184.216.34", "2606:4700::1", "93.184.216.34"])
    resolved = await PROD.check_resolved("https://Hooks.Example.com:8443/x", resolver)
    assert resolved == ResolvedTarget(
        target=WebhookTarget("https", "hooks.example.com", 8443, None),
        addresses=(IPv4Address("93.184.216.34"), IPv6Address("2606:4700::1")),
    )
    assert resolver.calls == [("hooks.example.com", 8443)]


@pytest.mark.parametrize(
    ("answer", "rule"),
    [
        (["93.184.216.34", "10.0.0.1"], "private_address"),
        (["127.0.0.1"], "loopback_address"),
        (["2606:4700::1", "::1"], "loopback_address"),
        (["93.184.216.34", "169.254.169.254"], "link_local_address"),
        (["::ffff:169.254.169.254"], "link_local_address"),
        (["0.0.0.0"], "unspecified_address"),
        (["not-an-address"], "invalid_address"),
    ],
)
async def test_one_refused_address_refuses_the_whole_answer(answer: list[str], rule: str) -> None:
    with pytest.raises(DestinationRefused) as caught:
        await PROD.check_resolved("https://hooks.example.com/", FakeResolver(answer))
    assert rule_of(caught.value) == rule
    assert not isinstance(caught.value, DestinationUnresolvable)


async def test_resolved_loopback_message() -> None:
    with pytest.raises(DestinationRefused) as caught:
        await PROD.check_resolved("https://hooks.example.com/", FakeResolver(["127.0.0.1"]))
    assert "host resolves to 127.0.0.1, a loopback address" in caught.value.message
    assert DEV_SWITCH_HINT in caught.value.message


async def test_dev_mode_allows_resolved_loopback() -> None:
    resolved = await DEV.check_resolved(
        "http://localhost:8080/", FakeResolver(["127.0.0.1", "::1"])
    )
    assert resolved.addresses == (IPv4Address("127.0.0.1"), IPv6Address("::1"))


async def test_literal_hosts_skip_the_resolver() -> None:
    resolver = FakeResolver(OSError("must not be called"))
    resolved = await PROD.check_resolved("https://93.184.216.34/", resolver)
    assert resolved.addresses == (IPv4Address("93.184.216.34"),)
    assert resolver.calls == []
    with pytest.raises(DestinationRefused):
        await PROD.check_resolved("https://0x7f.1/", resolver)
    assert resolver.calls == []


async def test_syntax_is_checked_before_resolution() -> None:
    resolver = FakeResolver(["93.184.216.34"])
    with pytest.raises(DestinationRefused):
        await PROD.check_resolved("http://hooks.example.com/", resolver)
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "not known"),
        (TimeoutError(), "timed out"),
        (OSError("resolver exploded"), "resolver exploded"),
    ],
)
async def test_dns_failure_is_unresolvable(failure: OSError, reason: str) -> None:
    with pytest.raises(DestinationUnresolvable) as caught:
        await PROD.check_resolved("https://nowhere.example.com/", FakeResolver(failure))
    exc = caught.value
    assert isinstance(exc, DestinationRefused)
    assert exc.code == "destination_unresolvable"
    assert "nowhere.example.com" in exc.message
    assert reason in exc.message
    assert exc.details == [{"field": "url", "rule": "unresolvable_host"}]


async def test_empty_answer_is_unresolvable() -> None:
    with pytest.raises(DestinationUnresolvable, match="no addresses"):
        await PROD.check_resolved("https://hooks.example.com/", FakeResolver([]))


async def test_dns_rebinding_is_caught_at_delivery_time() -> None:
    """Public at registration, loopback by delivery: the second check refuses."""
    rebinding = FakeResolver(["93.184.216.34"], ["127.0.0.1"])
    url = "https://hooks.example.com/hook"
    registered = await PROD.check_resolved(url, rebinding)
    assert registered.addresses == (IPv4Address("93.184.216.34"),)
    with pytest.raises(DestinationRefused) as caught:
        await PROD.check_resolved(url, rebinding)
    assert rule_of(caught.value) == "loopback_address"
    assert len(rebinding.calls) == 2


# --- parse_networks -------------------------------------------------------------


def test_parse_networks() -> None:
    assert parse_networks("10.0.0.0/8, fd00::/8,192.168.5.7") == (
        IPv4Network("10.0.0.0/8"),
        IPv6Network("fd00::/8"),
        IPv4Network("192.168.5.7/32"),
    )


@pytest.mark.parametrize("spec", ["", "   ", " , ,"])
def test_parse_networks_blank_means_none(spec: str) -> None:
    assert parse_networks(spec) == ()


@pytest.mark.parametrize("spec", ["10.0.0.1/8", "nonsense", "10.0.0.0/33", "10.0.0.0/8;fd00::/8"])
def test_parse_networks_refuses_bad_input(spec: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_networks(spec)
    assert "BELLHOOK_ALLOWED_NETWORKS" in caught.value.message
    assert caught.value.code == "configuration_error"
