"""The records bellhook works with, independent of storage and HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class WebhookStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ErrorKind(StrEnum):
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    DNS = "dns"
    TLS = "tls"
    HTTP_STATUS = "http_status"
    REDIRECT = "redirect"
    TOO_LARGE = "too_large"
    BLOCKED_DESTINATION = "blocked_destination"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the owner behind an API key."""

    key_id: str
    owner_id: str
    is_admin: bool


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    owner_id: str
    is_admin: bool
    name: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    owner_id: str
    admin_owned: bool
    url: str
    events: tuple[str, ...]
    description: str | None
    status: WebhookStatus
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookSecrets:
    """The signing secrets of a webhook: the current one and, during a rotation, the old one."""

    current: str
    previous: str | None = None
    previous_expires_at: datetime | None = None

    def active(self, now: datetime) -> tuple[str, ...]:
        if self.previous and self.previous_expires_at and now < self.previous_expires_at:
            return (self.current, self.previous)
        return (self.current,)


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    data_json: str
    timestamp: datetime
    audience: tuple[str, ...] | None  # None: admin webhooks only; ("*",): everyone
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    event_id: str
    webhook_id: str
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error_kind: ErrorKind | None
    is_test: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    id: str
    delivery_id: str
    number: int
    manual: bool
    started_at: datetime
    status_code: int | None
    latency_ms: float
    error_kind: ErrorKind | None
    error_message: str | None
    response_excerpt: str | None
