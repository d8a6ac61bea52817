"""The errors of the API client: every failed call raises one ``ApiError``.

An answer in the error envelope becomes the subclass of its kind (chosen by the
envelope's code, then by the HTTP status); a request that got no answer at all
(connection refused, timeout) becomes an ``ApiConnectionError`` naming the URL. The
str of each is one line, fit to print as it is: ``404 not_found: webhook wh_… not
found``. No error ever holds the API key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx

from bellhook.errors import BellhookError

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "ApiTimeoutError",
    "AuthenticationError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "RateLimitedError",
    "ServerError",
    "ServiceUnavailableError",
    "ValidationError",
]


class ApiError(BellhookError):
    """A call of the bellhook API failed. ``status`` is the HTTP status, or None when
    no answer came (``ApiConnectionError``)."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        *,
        details: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.status = status
        self.code = code

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}" if self.status is not None else self.code
        return f"{prefix}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r})"
        )


class ValidationError(ApiError):
    """400, 413, 415 or 422: the request cannot be accepted; ``details`` name the fields."""


class AuthenticationError(ApiError):
    """401: a missing, malformed or revoked API key."""


class ForbiddenError(ApiError):
    """403: the route needs an admin API key."""


class NotFoundError(ApiError):
    """404: no such resource for this owner (or no such route)."""


class ConflictError(ApiError):
    """409: the request conflicts with the resource's state."""


class RateLimitedError(ApiError):
    """429: too many calls with this key; ``retry_after`` is the wait in seconds."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        *,
        details: Sequence[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, details=details)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: bellhook (or a proxy before it) failed to answer the call."""


class ServiceUnavailableError(ServerError):
    """503: the database is unreachable, or the service is not ready (``readyz``)."""


class ApiConnectionError(ApiError):
    """No answer: the connection was refused or broke, or the name did not resolve."""

    def __init__(self, url: str, message: str, *, code: str = "connection_error") -> None:
        super().__init__(None, code, message)
        self.url = url


class ApiTimeoutError(ApiConnectionError):
    """No answer within the client's timeout."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: ValidationError,
    415: ValidationError,
    422: ValidationError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}
_BY_CODE: dict[str, type[ApiError]] = {
    "validation_error": ValidationError,
    "unknown_event_type": ValidationError,
    "destination_refused": ValidationError,
    "limit_exceeded": ValidationError,
    "malformed_json": ValidationError,
    "unauthorized": AuthenticationError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "rate_limited": RateLimitedError,
    "storage_unavailable": ServiceUnavailableError,
    "database_unreachable": ServiceUnavailableError,
    "not_ready": ServiceUnavailableError,
}


def _kind(status: int, code: str) -> type[ApiError]:
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ApiError


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _retry_after(response: httpx.Response, details: list[dict[str, Any]]) -> float | None:
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            return float(header)
        except ValueError:
            pass
    for detail in details:
        value = detail.get("retryAfter")
        if isinstance(value, int | float):
            return float(value)
    return None


def error_from_response(response: httpx.Response) -> ApiError:
    """The error an unsuccessful answer stands for (error envelope or not)."""
    status = response.status_code
    code, message = f"http_{status}", ""
    details: list[dict[str, Any]] = []
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
        raw = error.get("details")
        if isinstance(raw, list):
            details = [d for d in raw if isinstance(d, dict)]
    if not message:
        reason = response.reason_phrase or "error"
        excerpt = _one_line(response.text) if response.content else ""
        message = f"{reason}: {excerpt}" if excerpt else reason
    kind = _kind(status, code)
    message = _one_line(message, 500)
    if kind is RateLimitedError:
        return RateLimitedError(
            status, code, message, details=details, retry_after=_retry_after(response, details)
        )
    return kind(status, code, message, details=details)


def safe_url(url: httpx.URL) -> str:
    """``url`` without user info (a password must not reach a message)."""
    return str(url.copy_with(username=None, password=None)) if url.userinfo else str(url)


def transport_error(exc: httpx.TransportError, method: str, url: httpx.URL) -> ApiConnectionError:
    """An httpx failure to get any answer, as the client's error."""
    where = safe_url(url)
    cause = _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ApiTimeoutError(
            where, f"no answer from {method} {where} in time ({cause})", code="timeout"
        )
    return ApiConnectionError(where, f"cannot reach {method} {where}: {cause}")
