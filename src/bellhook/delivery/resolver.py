"""Name resolution for deliveries, pinned to the destination policy.

The HTTP client must connect only to addresses that passed the policy, with no
second DNS lookup an attacker could rebind in between. ``PolicyResolver`` is
the aiohttp resolver that does both at once: it resolves, judges every address
and hands aiohttp only an all-clear answer.

aiohttp never asks its resolver about a host that already is an IP address,
so the resolver alone cannot stop ``https://[::ffff:127.0.0.1]/``. The sender
therefore holds a ``DestinationGuard`` and, for every delivery::

    guard.check_before_send(url)          # syntax + IP literals, no DNS
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=guard.connector_resolver()),
        middlewares=(guard.middleware,),  # re-checks every hop, redirects too
        trust_env=False,                  # a proxy would resolve names for us
    )
    try:
        await session.post(url, allow_redirects=False, ...)
    except Exception as exc:
        if blocked_destination_of(exc) is not None:
            ...                           # error kind "blocked_destination"

A refusal at connect time surfaces from ``session.post`` as
``aiohttp.ClientConnectorDNSError`` whose ``os_error`` is a ``BlockedByPolicy``;
a refusal by the middleware surfaces as the ``DestinationRefused`` itself.
``blocked_destination_of`` finds the refusal in either shape.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import deque

from aiohttp import ClientConnectorError, ClientRequest, ClientResponse
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_middlewares import ClientHandlerType
from yarl import URL

from bellhook.domain.destination import (
    DestinationPolicy,
    DestinationUnresolvable,
    IPAddress,
    ResolvedTarget,
    Resolver,
    WebhookTarget,
)
from bellhook.errors import DestinationRefused


class SystemResolver:
    """The default ``Resolver``: the operating system's ``getaddrinfo``."""

    def __init__(self, *, timeout: float | None = 10.0) -> None:
        self._timeout = timeout

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except UnicodeError as exc:
            # getaddrinfo IDNA-encodes names itself; a name it cannot encode
            # does not exist, which callers expect as an OSError.
            raise socket.gaierror(socket.EAI_NONAME, f"invalid host name: {exc}") from exc
        answer: dict[str, None] = {}  # distinct, in resolver order
        for family, _type, _proto, _canonname, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                answer[str(sockaddr[0])] = None
        return list(answer)


class BlockedByPolicy(OSError):
    """A policy refusal dressed as the ``OSError`` aiohttp expects of a resolver.

    aiohttp wraps it in ``ClientConnectorDNSError``, so a sender that only
    catches ``aiohttp.ClientError`` still fails the attempt cleanly.
    """

    def __init__(self, refusal: DestinationRefused) -> None:
        super().__init__(errno.EACCES, refusal.message)
        self.refusal = refusal


class PolicyResolver(AbstractResolver):
    """An aiohttp resolver that answers only with addresses the policy allows.

    If any resolved address is refused the whole answer is refused: an
    attacker's name must not get a foot in the door through a mixed answer.
    """

    def __init__(self, resolver: Resolver, policy: DestinationPolicy) -> None:
        self._resolver = resolver
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        # A DNS failure stays a plain OSError: it is retryable, not a block.
        answer = await self._resolver.resolve(host, port)
        try:
            addresses = self._policy.check_addresses(host, answer)
        except DestinationUnresolvable as exc:
            raise OSError(errno.ENOENT, exc.message) from None
        except DestinationRefused as refusal:
            raise BlockedByPolicy(refusal) from refusal
        results = [
            _resolve_result(host, ip, port) for ip in addresses if _matches_family(ip, family)
        ]
        if not results:
            raise OSError(errno.ENOENT, f"{host} has no address of the requested family")
        return results

    async def close(self) -> None:
        """Nothing to release: the wrapped resolver belongs to the caller."""


PASSED_CACHE_SIZE = 10_000


class DestinationGuard:
    """What the sender holds: one policy and one resolver for both checks."""

    def __init__(self, policy: DestinationPolicy, resolver: Resolver | None = None) -> None:
        self._policy = policy
        self._resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self._connector_resolver = PolicyResolver(self._resolver, policy)
        # URLs that passed check_before_send. The verdict is a pure function of the URL
        # and the (frozen) policy, and the same few URLs are checked thousands of times
        # a second on the delivery path.
        self._passed: dict[str, WebhookTarget] = {}

    @property
    def policy(self) -> DestinationPolicy:
        return self._policy

    def connector_resolver(self) -> PolicyResolver:
        """The resolver to pass to ``aiohttp.TCPConnector(resolver=...)``."""
        return self._connector_resolver

    async def check_registration(self, url: str) -> ResolvedTarget:
        """Full check with DNS, for creating or updating a webhook."""
        return await self._policy.check_resolved(url, self._resolver)

    def check_before_send(self, url: str) -> WebhookTarget:
        """Cheap pre-delivery check (no DNS): syntax and IP-literal hosts.

        Needed because aiohttp connects to IP literals without consulting the
        resolver. Names are judged at connect time by ``PolicyResolver``.
        """
        passed = self._passed.get(url)
        if passed is not None:
            return passed
        target = self._policy.check_url(url)
        try:
            parsed = URL(url)
        except ValueError:
            raise DestinationRefused(
                "the webhook URL is not valid", details=[{"field": "url", "rule": "invalid_url"}]
            ) from None
        self._check_client_url(parsed)
        if len(self._passed) >= PASSED_CACHE_SIZE:
            self._passed.clear()
        self._passed[url] = target
        return target

    async def middleware(
        self, request: ClientRequest, handler: ClientHandlerType
    ) -> ClientResponse:
        """aiohttp client middleware: judge each request, redirect hops included."""
        self._check_client_url(request.url)
        return await handler(request)

    def _check_client_url(self, url: URL) -> None:
        # Judge the URL as the HTTP client parsed it, so a parser disagreement
        # cannot smuggle an IP literal past us. Only the authority matters
        # here, and dropping the path keeps percent-encoding from tripping
        # the length limit.
        self._policy.check_url(str(url.with_path("/").with_query(None).with_fragment(None)))


def blocked_destination_of(exc: BaseException) -> DestinationRefused | None:
    """The policy refusal behind a failed request, or None if it was not blocked.

    Follows the chain Python would print (``__cause__``, else an unsuppressed
    ``__context__``), aiohttp's ``os_error`` and exception groups. A DNS
    failure (``DestinationUnresolvable``) is not a block and is not returned.
    """
    queue: deque[BaseException] = deque([exc])
    seen: set[int] = set()
    while queue:
        current = queue.popleft()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BlockedByPolicy):
            return current.refusal
        if isinstance(current, DestinationRefused) and not isinstance(
            current, DestinationUnresolvable
        ):
            return current
        if isinstance(current, ClientConnectorError):
            queue.append(current.os_error)
        if isinstance(current, BaseExceptionGroup):
            queue.extend(current.exceptions)
        if current.__cause__ is not None:
            queue.append(current.__cause__)
        elif current.__context__ is not None and not current.__suppress_context__:
            queue.append(current.__context__)
    return None


def _matches_family(ip: IPAddress, family: int) -> bool:
    if family == socket.AF_INET:
        return ip.version == 4
    if family == socket.AF_INET6:
        return ip.version == 6
    return True  # AF_UNSPEC


def _resolve_result(host: str, ip: IPAddress, port: int) -> ResolveResult:
    return ResolveResult(
        hostname=host,
        host=str(ip),
        port=port,
        family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
        proto=0,
        flags=0,
    )
