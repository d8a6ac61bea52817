"""The bellhook API from Python: ``Client`` (async) and ``SyncClient`` (blocking), on httpx.

Results are the API's own pydantic models (``bellhook.api.schemas``); a failed call
raises an ``ApiError`` of its kind (``bellhook.client.errors``). See docs/client.md.
"""

from __future__ import annotations

from bellhook.client._async import UNSET, Client, Page, Unset
from bellhook.client._sync import SyncClient
from bellhook.client.errors import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    ValidationError,
)

__all__ = [
    "UNSET",
    "ApiConnectionError",
    "ApiError",
    "ApiTimeoutError",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "Page",
    "RateLimitedError",
    "ServerError",
    "ServiceUnavailableError",
    "SyncClient",
    "Unset",
    "ValidationError",
]
