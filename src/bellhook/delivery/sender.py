"""The sender: one signed POST to one webhook, and what came of it.

aiohttp, pooled and kept alive, is the client: at high concurrency it is many
times faster than httpx here. The sender never raises for a failed delivery;
it returns an AttemptResult with the error kind.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from aiohttp import http_exceptions

from bellhook import __version__
from bellhook.delivery.resolver import DestinationGuard, blocked_destination_of
from bellhook.domain.models import ErrorKind
from bellhook.domain.outcome import AttemptResult, classify_status, excerpt
from bellhook.domain.retry import parse_retry_after
from bellhook.domain.signing import PayloadTemplate, signature_headers
from bellhook.errors import DestinationRefused
from bellhook.store.deliveries import Job

MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = f"Bellhook/{__version__}"


@dataclass(slots=True)  # not frozen: made per delivery (see Job)
class SignedRequest:
    url: str
    body: bytes
    headers: dict[str, str]


def build_request(job: Job, *, now: datetime) -> SignedRequest:
    """The exact bytes and headers of one attempt (the signature covers the body sent)."""
    template = PayloadTemplate(job.event_id, job.event_type, job.timestamp, job.data_json)
    secrets = job.secrets.active(now)
    body = template.render(secrets[0])
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        # Responses are kept as excerpts, never decompressed. Said here rather than with
        # ClientSession(skip_auto_headers=...), which costs a header copy on every request.
        "Accept-Encoding": "identity",
        "X-Webhook-Event": job.event_type,
        "X-Webhook-Id": job.event_id,
        "X-Webhook-Attempt": str(job.attempt_count + 1),
        **signature_headers(body, job.event_id, int(now.timestamp()), secrets),
    }
    if job.is_test:
        headers["X-Webhook-Test"] = "true"
    return SignedRequest(job.url, body, headers)


class Sender:
    """Holds the HTTP client; open it once per process, close it at shutdown."""

    def __init__(self, guard: DestinationGuard, *, timeout: float, max_connections: int) -> None:
        self.guard = guard
        self.timeout = timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            resolver=self.guard.connector_resolver(),
            ttl_dns_cache=30,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            # No per-request middleware: redirects are never followed, so the one hop is
            # judged by check_before_send, and host names by the resolver at connect time.
            trust_env=False,  # a proxy would resolve names behind the policy's back
            # One receiver's cookies must never travel to another (and jar upkeep is
            # a measurable share of each request's cost).
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # with Accept-Encoding: identity on every request
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: SignedRequest, *, started_at: datetime) -> AttemptResult:
        assert self._session is not None, "Sender.open() was not awaited"
        start = time.perf_counter()

        def result(**fields: object) -> AttemptResult:
            latency = round((time.perf_counter() - start) * 1000, 3)
            return AttemptResult(started_at=started_at, latency_ms=latency, **fields)  # type: ignore[arg-type]

        try:
            self.guard.check_before_send(request.url)
            async with self._session.post(
                request.url,
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
            ) as response:
                body, truncated = await _read_limited(response.content, MAX_RESPONSE_BYTES)
                if truncated:
                    response.close()  # do not drain the rest, do not reuse the connection
                kind = classify_status(response.status)
                retry_after = (
                    parse_retry_after(response.headers.get("Retry-After"), now=started_at)
                    if response.status in (429, 503)
                    else None
                )
                message = None
                if kind is ErrorKind.REDIRECT:
                    message = (
                        f"redirects are not followed (to {response.headers.get('Location', '?')})"
                    )
                elif kind is ErrorKind.HTTP_STATUS:
                    message = f"the receiver answered {response.status}"
                return result(
                    status_code=response.status,
                    error_kind=kind,
                    error_message=message,
                    response_excerpt=excerpt(body),
                    retry_after=retry_after,
                )
        except DestinationRefused as exc:
            return result(error_kind=ErrorKind.BLOCKED_DESTINATION, error_message=exc.message)
        except TimeoutError:
            return result(
                error_kind=ErrorKind.TIMEOUT,
                error_message=f"no complete answer within {self.timeout:g} s",
            )
        except aiohttp.ClientError as exc:
            kind, message = classify_client_error(exc)
            return result(error_kind=kind, error_message=message)
        except (ssl.SSLError, OSError) as exc:
            return result(error_kind=ErrorKind.CONNECTION, error_message=_short(exc))


async def _read_limited(stream: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    buf = bytearray()
    while len(buf) <= limit:
        chunk = await stream.read(limit + 1 - len(buf))
        if not chunk:
            return bytes(buf), False
        buf += chunk
    return bytes(buf[:limit]), True


def classify_client_error(exc: aiohttp.ClientError) -> tuple[ErrorKind, str]:
    refusal = blocked_destination_of(exc)
    if refusal is not None:
        return ErrorKind.BLOCKED_DESTINATION, refusal.message
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ErrorKind.DNS, "the host name could not be resolved"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return ErrorKind.TLS, f"TLS failed: {_short(exc)}"
    if isinstance(exc, aiohttp.ClientResponseError) and _too_large(exc):
        return ErrorKind.TOO_LARGE, "the response headers are too large"
    return ErrorKind.CONNECTION, _short(exc)


def _too_large(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, http_exceptions.LineTooLong):
            return True
        text = str(seen).lower()
        if "too long" in text or "too large" in text or "too many headers" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]
