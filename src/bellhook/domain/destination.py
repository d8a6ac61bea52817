"""Destination policy: which webhook URLs bellhook may POST to (the SSRF guard).

Outsiders choose webhook URLs, so every URL is checked when a webhook is
created or updated and again before every delivery: ``https`` only, no
credentials, and a host that resolves only to public unicast addresses.

This module is pure: name resolution goes through an injected ``Resolver``.
The default implementation and the aiohttp glue that pins connections to the
checked addresses live in ``bellhook.delivery.resolver``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Final, Protocol

import idna

from bellhook.errors import ConfigurationError, DestinationRefused

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

MAX_URL_LENGTH: Final = 2048
DEV_SWITCH_HINT: Final = (
    "start bellhook with --dev or BELLHOOK_DEV_MODE=true to allow local targets"
)
_ALLOWED_NETWORKS_HINT: Final = "or list its network in BELLHOOK_ALLOWED_NETWORKS"
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}

# Anything a parser might strip, fold or treat as a separator is refused
# outright, so that no two URL parsers can disagree about the host.
_UNSAFE_CHARS: Final = re.compile(r"[\x00-\x20\x7f\\]|\s")
_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_HOSTNAME_CHARS: Final = re.compile(r"[a-z0-9._-]+")
_HEX_NUMBER: Final = re.compile(r"0x[0-9a-f]*")


class DestinationUnresolvable(DestinationRefused):
    """The webhook host has no address (DNS failure or an empty answer)."""

    code = "destination_unresolvable"


class Resolver(Protocol):
    """Name resolution, injected so the domain never touches the network."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """Return the IP addresses of ``host``; raise ``OSError`` on failure."""
        ...


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A syntactically acceptable webhook URL, reduced to where it points.

    ``host`` is lowercase and IDNA-encoded, without a trailing dot; for an IP
    literal it is the canonical address (IPv6 without brackets).
    """

    scheme: str
    host: str
    port: int
    literal_ip: IPAddress | None


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """A target whose every address passed the policy."""

    target: WebhookTarget
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class _Category:
    rule: str
    phrase: str
    local: bool = False  # allowed in development mode
    hard: bool = False  # never allowed, not even by dev mode or allowed_networks


_UNSPECIFIED = _Category("unspecified_address", "an unspecified address", hard=True)
_THIS_NETWORK = _Category("this_network_address", "a 'this network' (0.0.0.0/8) address", hard=True)
_MULTICAST = _Category("multicast_address", "a multicast address", hard=True)
_BROADCAST = _Category("broadcast_address", "a broadcast address", hard=True)
_LOOPBACK = _Category("loopback_address", "a loopback address", local=True)
_PRIVATE = _Category("private_address", "a private address", local=True)
_LINK_LOCAL = _Category(
    "link_local_address", "a link-local address (cloud metadata lives here)", local=True
)
_UNIQUE_LOCAL = _Category("unique_local_address", "a unique-local (private) address", local=True)
_SITE_LOCAL = _Category("site_local_address", "a site-local (private) address", local=True)
_SHARED = _Category("shared_address", "a carrier-grade NAT (100.64.0.0/10) address")
_DOCUMENTATION = _Category("documentation_address", "a documentation address")
_BENCHMARK = _Category("benchmark_address", "a benchmarking address")
_RESERVED = _Category("reserved_address", "a reserved, non-public address")

# Order matters: the first matching network names the category.
_IPV4_RULES: Final[tuple[tuple[IPv4Network, _Category], ...]] = (
    (IPv4Network("0.0.0.0/32"), _UNSPECIFIED),
    (IPv4Network("0.0.0.0/8"), _THIS_NETWORK),
    (IPv4Network("127.0.0.0/8"), _LOOPBACK),
    (IPv4Network("10.0.0.0/8"), _PRIVATE),
    (IPv4Network("172.16.0.0/12"), _PRIVATE),
    (IPv4Network("192.168.0.0/16"), _PRIVATE),
    (IPv4Network("169.254.0.0/16"), _LINK_LOCAL),
    (IPv4Network("100.64.0.0/10"), _SHARED),
    (IPv4Network("192.0.2.0/24"), _DOCUMENTATION),
    (IPv4Network("198.51.100.0/24"), _DOCUMENTATION),
    (IPv4Network("203.0.113.0/24"), _DOCUMENTATION),
    (IPv4Network("198.18.0.0/15"), _BENCHMARK),
    # ipaddress calls parts of these two global; they are protocol plumbing.
    (IPv4Network("192.0.0.0/24"), _RESERVED),
    (IPv4Network("192.88.99.0/24"), _RESERVED),
    (IPv4Network("224.0.0.0/4"), _MULTICAST),
    (IPv4Network("255.255.255.255/32"), _BROADCAST),
    (IPv4Network("240.0.0.0/4"), _RESERVED),
)
_IPV6_RULES: Final[tuple[tuple[IPv6Network, _Category], ...]] = (
    (IPv6Network("::/128"), _UNSPECIFIED),
    (IPv6Network("::1/128"), _LOOPBACK),
    (IPv6Network("ff00::/8"), _MULTICAST),
    (IPv6Network("fe80::/10"), _LINK_LOCAL),
    (IPv6Network("fec0::/10"), _SITE_LOCAL),
    (IPv6Network("fc00::/7"), _UNIQUE_LOCAL),
    (IPv6Network("2001:db8::/32"), _DOCUMENTATION),
    (IPv6Network("3fff::/20"), _DOCUMENTATION),
    (IPv6Network("2001:2::/48"), _BENCHMARK),
    # ipaddress (3.11) wrongly calls the local-use NAT64 prefix global.
    (IPv6Network("64:ff9b:1::/48"), _RESERVED),
    (IPv6Network("2001::/23"), _RESERVED),
    (IPv6Network("100::/64"), _RESERVED),
)
# Every public IPv6 unicast address is in 2000::/3; what is outside is not.
_IPV6_GLOBAL_UNICAST: Final = IPv6Network("2000::/3")
_IPV4_COMPATIBLE: Final = IPv6Network("::/96")
_NAT64: Final = IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """The SSRF rules for webhook destinations.

    ``dev_mode`` allows ``http`` and loopback, private and link-local targets;
    ``allowed_networks`` allows chosen non-public ranges in production.
    Unspecified, multicast, broadcast and 0.0.0.0/8 addresses and URL
    credentials are refused whatever the settings.
    """

    dev_mode: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    def check_url(self, url: str) -> WebhookTarget:
        """Check a URL without DNS; an IP-literal host is judged right away."""
        if len(url) > MAX_URL_LENGTH:
            raise _refuse(
                f"webhook URLs must be at most {MAX_URL_LENGTH} characters long", "url_too_long"
            )
        if _UNSAFE_CHARS.search(url):
            raise _refuse(
                "webhook URLs must not contain spaces, control characters or backslashes",
                "invalid_url",
            )
        scheme_match = _SCHEME.match(url)
        if scheme_match is None:
            raise _refuse("webhook URLs must be absolute, like https://host/path", "invalid_url")
        scheme = scheme_match.group(1).lower()
        if scheme not in self._schemes():
            raise _refuse(self._scheme_message(), "https_required")

        rest = url[scheme_match.end() :]
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        if "@" in authority:
            # Never echo the authority: it holds the password.
            raise _refuse(
                "webhook URLs must not contain credentials (user:password@host); "
                "send secrets in headers instead",
                "credentials_in_url",
            )
        raw_host, port = _split_authority(authority, _DEFAULT_PORTS[scheme])
        host, literal_ip = _normalize_host(raw_host)
        if literal_ip is not None:
            self.check_address(literal_ip)
        return WebhookTarget(scheme=scheme, host=host, port=port, literal_ip=literal_ip)

    def check_address(self, ip: IPAddress) -> None:
        """Refuse an address the policy does not allow, naming its category."""
        embedded = _embedded_ipv4(ip) if isinstance(ip, IPv6Address) else None
        # A wrapper around an IPv4 address is judged by what it wraps.
        category = _categorize(embedded if embedded is not None else ip)
        if category is None or self._permits(category, ip, embedded):
            return
        if embedded is not None:
            message = f"host resolves to {ip}, which embeds {embedded}, {category.phrase}"
        else:
            message = f"host resolves to {ip}, {category.phrase}"
        if category.local and not self.dev_mode:
            message += f"; {DEV_SWITCH_HINT}, {_ALLOWED_NETWORKS_HINT}"
        raise _refuse(message, category.rule)

    def check_addresses(self, host: str, addresses: Sequence[str]) -> tuple[IPAddress, ...]:
        """Judge a resolver's answer: every address must pass (one bad one refuses all).

        Returns the distinct addresses in answer order. An empty answer is
        ``DestinationUnresolvable``: no address is not the same as a safe one.
        """
        if not addresses:
            raise DestinationUnresolvable(
                f"webhook host {host} resolved to no addresses",
                details=[_detail("unresolvable_host")],
            )
        checked: dict[IPAddress, None] = {}
        for text in addresses:
            try:
                ip = ip_address(text)
            except ValueError:
                raise _refuse(
                    f"webhook host {host} resolved to something that is not an IP address",
                    "invalid_address",
                ) from None
            self.check_address(ip)
            checked[ip] = None
        return tuple(checked)

    async def check_resolved(self, url: str, resolver: Resolver) -> ResolvedTarget:
        """``check_url``, then resolve the host and require every address to pass."""
        target = self.check_url(url)
        if target.literal_ip is not None:
            return ResolvedTarget(target=target, addresses=(target.literal_ip,))
        try:
            answer = await resolver.resolve(target.host, target.port)
        except OSError as exc:  # TimeoutError included
            reason = _dns_failure_reason(exc)
            raise DestinationUnresolvable(
                f"webhook host {target.host} could not be resolved: {reason}",
                details=[_detail("unresolvable_host")],
            ) from exc
        addresses = self.check_addresses(target.host, answer)
        return ResolvedTarget(target=target, addresses=addresses)

    def _schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.dev_mode else ("https",)

    def _scheme_message(self) -> str:
        if self.dev_mode:
            return "webhook URLs must use http or https"
        return (
            "webhook URLs must use https "
            "(plain http needs development mode: --dev or BELLHOOK_DEV_MODE=true)"
        )

    def _permits(self, category: _Category, ip: IPAddress, embedded: IPv4Address | None) -> bool:
        if category.hard:
            return False
        if self.dev_mode and category.local:
            return True
        return any(
            candidate in network
            for network in self.allowed_networks
            for candidate in (ip, embedded)
            if candidate is not None and candidate.version == network.version
        )


def parse_networks(spec: str) -> tuple[IPNetwork, ...]:
    """Parse comma-separated CIDRs (``BELLHOOK_ALLOWED_NETWORKS``); blank means none."""
    networks: list[IPNetwork] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        try:
            networks.append(ip_network(item, strict=True))
        except ValueError as exc:
            raise ConfigurationError(
                f"BELLHOOK_ALLOWED_NETWORKS: {item!r} is not a network in CIDR form "
                f"such as 10.0.0.0/8 or fd00::/8 ({exc})"
            ) from None
    return tuple(networks)


def _dns_failure_reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "the DNS lookup timed out"
    return exc.strerror or str(exc) or type(exc).__name__


def _refuse(message: str, rule: str) -> DestinationRefused:
    return DestinationRefused(message, details=[_detail(rule)])


def _detail(rule: str) -> dict[str, str]:
    return {"field": "url", "rule": rule}


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    """Split ``host[:port]``; the host is still raw (IPv6 keeps its brackets)."""
    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            raise _refuse("the webhook URL has an unclosed IPv6 bracket", "invalid_host")
        host, port_part = authority[: end + 1], authority[end + 1 :]
        if port_part and not port_part.startswith(":"):
            raise _refuse("the webhook URL host is not valid", "invalid_host")
        port_text = port_part[1:]
    else:
        host, _, port_text = authority.partition(":")
        if ":" in port_text:
            raise _refuse(
                "IPv6 addresses in webhook URLs must be in brackets, like https://[2001:db8::1]/",
                "invalid_host",
            )
    if not host:
        raise _refuse("webhook URLs must name a host", "host_required")
    if not port_text:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise _refuse("the webhook URL port must be a number from 1 to 65535", "invalid_port")
    return host, int(port_text)


def _normalize_host(raw: str) -> tuple[str, IPAddress | None]:
    """Lowercase and IDNA-encode a host; decode IP literals the way resolvers do."""
    if "%" in raw:
        # Percent-encoded hosts and IPv6 zone ids are decoded differently by
        # different parsers; no legitimate webhook needs them.
        raise _refuse("webhook URL hosts must not contain '%'", "invalid_host")
    if raw.startswith("["):
        try:
            ipv6 = IPv6Address(raw[1:-1])
        except ValueError:
            raise _refuse(
                "the webhook URL host is not a valid IPv6 address", "invalid_host"
            ) from None
        return str(ipv6), ipv6
    host = _idna_encode(raw.lower())
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # one trailing dot: a fully qualified name
    if _ends_in_number(labels[-1]):
        ipv4 = _parse_ipv4(labels)
        if ipv4 is None:
            raise _refuse("the webhook URL host is not a valid IPv4 address", "invalid_host")
        return str(ipv4), ipv4
    name = ".".join(labels)
    if (
        len(name) > 253
        or not _HOSTNAME_CHARS.fullmatch(name)
        or any(not 1 <= len(label) <= 63 for label in labels)
    ):
        raise _refuse("the webhook URL host is not a valid host name", "invalid_host")
    return name, None


def _idna_encode(host: str) -> str:
    if host.isascii():
        return host
    if any(unicodedata.category(char) == "Cf" for char in host):
        # Invisible format characters (soft hyphen, zero-width space, bidi
        # controls) vanish in encoding, so the host is not what it looks like.
        raise _refuse("webhook URL hosts must not contain invisible characters", "invalid_host")
    # Same encoder as yarl/aiohttp (UTS 46, then IDNA 2003), so this check and
    # the HTTP client agree on the name; it also folds ideographic full stops
    # and full-width digits, which is why IPv4 parsing happens afterwards.
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        pass
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise _refuse("the webhook URL host is not a valid host name", "invalid_host") from None


def _ends_in_number(label: str) -> bool:
    """WHATWG "ends in a number": such a host must parse as IPv4, or is invalid."""
    return (label.isascii() and label.isdigit()) or _HEX_NUMBER.fullmatch(label) is not None


def _parse_ipv4(parts: list[str]) -> IPv4Address | None:
    """Parse 1-4 decimal/octal/hex parts like inet_aton and the WHATWG URL parser."""
    if len(parts) > 4:
        return None
    numbers = [_parse_ipv4_number(part) for part in parts]
    if any(number is None for number in numbers):
        return None
    values = [number for number in numbers if number is not None]
    *leading, last = values
    if any(value > 255 for value in leading) or last >= 256 ** (5 - len(values)):
        return None
    total = last
    for index, value in enumerate(leading):
        total += value << (8 * (3 - index))
    return IPv4Address(total)


def _parse_ipv4_number(part: str) -> int | None:
    if not part:
        return None
    digits, base, allowed = part, 10, "0123456789"
    if part.startswith("0x"):
        digits, base, allowed = part[2:], 16, "0123456789abcdef"
    elif len(part) > 1 and part.startswith("0"):
        digits, base, allowed = part[1:], 8, "01234567"
    if not digits:
        return 0  # "0x" alone is zero, as in inet_aton
    if any(char not in allowed for char in digits):
        return None
    return int(digits, base)


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries, for forms that route to it."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    in_compatible = ip in _IPV4_COMPATIBLE and int(ip) > 1  # :: and ::1 are themselves
    if in_compatible or ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _categorize(ip: IPAddress) -> _Category | None:
    """The refused category of an address, or None for a public unicast one."""
    rules: Iterable[tuple[IPv4Network | IPv6Network, _Category]]
    rules = _IPV4_RULES if isinstance(ip, IPv4Address) else _IPV6_RULES
    for network, category in rules:
        if ip in network:
            return category
    if isinstance(ip, IPv6Address) and ip not in _IPV6_GLOBAL_UNICAST:
        return _RESERVED
    return None if ip.is_global else _RESERVED
