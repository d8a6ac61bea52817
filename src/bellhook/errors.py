"""The one error root of bellhook.

Errors carry a stable snake_case ``code``, a sentence a person understands and
optional ``details``. They know nothing about HTTP: the API maps each class to a
status in one table (``bellhook.api.errors``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class BellhookError(Exception):
    """Root of every error bellhook raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str, *, details: Sequence[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[dict[str, Any]] = list(details or [])


class ConfigurationError(BellhookError):
    code = "configuration_error"


class InvalidInput(BellhookError):
    """The caller sent something that cannot be accepted (HTTP 422)."""

    code = "validation_error"


class UnknownEventType(InvalidInput):
    code = "unknown_event_type"


class DestinationRefused(InvalidInput):
    """A webhook URL breaks the destination policy (SSRF rules)."""

    code = "destination_refused"


class NotFound(BellhookError):
    code = "not_found"


class AuthenticationFailed(BellhookError):
    code = "unauthorized"


class PermissionDenied(BellhookError):
    code = "forbidden"


class LimitExceeded(BellhookError):
    """A per-owner quota was reached (HTTP 422)."""

    code = "limit_exceeded"


class RateLimited(BellhookError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageUnavailable(BellhookError):
    code = "storage_unavailable"
