"""Request and response bodies of the HTTP API (pydantic), in the guide's envelope."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from bellhook.domain.catalog import EventType
from bellhook.domain.models import Webhook
from bellhook.domain.timefmt import iso_utc

T = TypeVar("T")


Timestamp = Annotated[datetime, PlainSerializer(iso_utc, return_type=str)]


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RequestModel(ApiModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# --- envelopes -------------------------------------------------------------------------


class Envelope(ApiModel, Generic[T]):
    success: Literal[True] = True
    data: T


class Pagination(ApiModel):
    next_cursor: str | None = Field(description="pass as ?cursor= to get the next page")


class ListEnvelope(ApiModel, Generic[T]):
    success: Literal[True] = True
    data: list[T]
    pagination: Pagination


class OkEnvelope(ApiModel):
    success: Literal[True] = True


class ErrorBody(ApiModel):
    code: str = Field(examples=["validation_error"])
    message: str = Field(examples=["url: field required"])
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorEnvelope(ApiModel):
    success: Literal[False] = False
    error: ErrorBody


_ERROR_MEANINGS = {
    400: "malformed JSON",
    401: "missing, malformed or revoked API key",
    403: "the route needs an admin API key",
    404: "no such resource for this owner",
    413: "request body too large",
    415: "the body must be JSON (Content-Type: application/json)",
    422: "invalid input; details name the field",
    429: "too many requests; see Retry-After",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a route can answer, all in the error envelope."""
    return {
        status: {"model": ErrorEnvelope, "description": _ERROR_MEANINGS[status]}
        for status in statuses
    }


API_ERRORS = (400, 401, 413, 415, 422, 429)


# --- webhooks --------------------------------------------------------------------------

Url = Annotated[
    str, Field(min_length=1, max_length=2048, examples=["https://your-app.com/webhook"])
]
EventNames = Annotated[
    list[Annotated[str, Field(max_length=128)]],
    Field(min_length=1, max_length=50, examples=[["post.created", "comment.created"]]),
]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Description = Annotated[str, Field(max_length=1024), AfterValidator(_no_nul)]
Secret = Annotated[str, Field(min_length=16, max_length=256)]


class WebhookCreate(RequestModel):
    url: Url
    events: EventNames
    secret: Secret | None = Field(
        default=None, description="16 to 256 characters; generated (whsec_...) when absent"
    )
    description: Description | None = None


class WebhookUpdate(RequestModel):
    url: Url | None = None
    events: EventNames | None = None
    description: Description | None = None
    status: Literal["active", "disabled"] | None = None


class WebhookOut(ApiModel):
    id: str
    url: str
    events: list[str]
    status: Literal["active", "disabled"]
    description: str | None
    disabled_reason: str | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookOut:
        return cls(
            id=webhook.id,
            url=webhook.url,
            events=list(webhook.events),
            status=webhook.status.value,
            description=webhook.description,
            disabled_reason=webhook.disabled_reason,
            created_at=webhook.created_at,
            updated_at=webhook.updated_at,
        )


class WebhookCreated(WebhookOut):
    secret: str | None = Field(
        default=None, description="only when bellhook generated the secret; shown this once"
    )


class SecretOut(ApiModel):
    secret: str
    previous_secret_expires_at: Timestamp | None = Field(
        default=None, description="until then deliveries are signed with the old secret too"
    )


class RotateIn(RequestModel):
    secret: Secret | None = Field(default=None, description="the new secret; generated if absent")
    grace_seconds: int = Field(
        default=86400,
        ge=0,
        le=7 * 86400,
        description="how long deliveries stay signed with the old secret as well",
    )


class EventTypeOut(ApiModel):
    name: str
    description: str
    example: dict[str, Any]

    @classmethod
    def of(cls, event_type: EventType) -> EventTypeOut:
        return cls(
            name=event_type.name,
            description=event_type.description,
            example=dict(event_type.example),
        )


class Health(ApiModel):
    status: Literal["ok"]
    database: Literal["ok"]
    version: str


class Ready(ApiModel):
    status: Literal["ready"]
    checks: dict[str, str] = Field(
        description="database, migrations, dispatcher, kafka: `ok` or `not_configured`"
    )


# --- events ----------------------------------------------------------------------------

EventId = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]


class EventIn(RequestModel):
    event: str = Field(max_length=128, examples=["post.created"])
    data: dict[str, Any] = Field(
        examples=[{"id": "post-id", "content": "Post content", "authorId": "user-id"}]
    )
    id: EventId | None = Field(
        default=None, description="your id for the event: posting it again is a no-op"
    )
    timestamp: datetime | None = Field(default=None, description="ISO 8601; default: now")
    audience: list[Annotated[str, Field(min_length=1, max_length=255)]] | Literal["*"] | None = (
        Field(
            default=None,
            max_length=10_000,
            description='owner ids that may receive the event, or "*" for every owner; '
            "absent: only webhooks of admin keys",
        )
    )


class EventAccepted(ApiModel):
    id: str
    deliveries: int = Field(description="deliveries scheduled for this event")
    duplicate: bool = Field(default=False, description="the id was accepted before")


MAX_BATCH = 1000


class BatchIn(RequestModel):
    events: list[Any] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="events as for POST /api/events; each is validated on its own",
    )


class BatchItemOut(ApiModel):
    id: str | None = None
    deliveries: int | None = None
    duplicate: bool | None = None
    error: ErrorBody | None = Field(default=None, description="why this event was refused")


class BatchOut(ApiModel):
    accepted: int
    rejected: int
    results: list[BatchItemOut] = Field(description="one per event, in the order sent")


# --- deliveries ------------------------------------------------------------------------


class AttemptOut(ApiModel):
    id: str
    number: int
    manual: bool
    started_at: Timestamp
    status_code: int | None
    latency_ms: float
    error: str | None = Field(
        description="error kind: timeout, connection, dns, tls, "
        "http_status, redirect, too_large, blocked_destination"
    )
    error_message: str | None
    response_body: str | None = Field(description="first 4 KiB of the response body")


class DeliveryOut(ApiModel):
    id: str
    event_id: str
    event: str
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt_at: Timestamp | None
    last_status_code: int | None
    last_error: str | None
    test: bool
    created_at: Timestamp
    updated_at: Timestamp


class DeliveryDetail(DeliveryOut):
    attempts: list[AttemptOut]


class RecoverIn(RequestModel):
    since: datetime = Field(description="resend failed deliveries created since this time")


class RecoverOut(ApiModel):
    resent: int


class TestIn(RequestModel):
    event: str = Field(default="post.created", max_length=128)


class AttemptOutcome(ApiModel):
    delivery_id: str
    event_id: str
    success: bool
    status_code: int | None
    latency_ms: float
    error: str | None
    error_message: str | None


class IngestErrorOut(ApiModel):
    """A message the Kafka consumer refused, and why (``GET /api/ingest/errors``)."""

    id: str
    topic: str
    partition: int
    offset: int
    key: str | None = Field(description="the start of the message key, if it had one")
    excerpt: str = Field(
        description="the first bytes of the message value (bytes that are not UTF-8 "
        "shown as \\x escapes)"
    )
    code: str = Field(examples=["not_json", "unknown_event_type", "validation_error"])
    reason: str
    received_at: Timestamp


# --- webhook stats ---------------------------------------------------------------------


class LatencyOut(ApiModel):
    p50: float | None = Field(description="nearest-rank, in ms; null without attempts")
    p99: float | None = Field(description="nearest-rank, in ms; null without attempts")


class LastErrorOut(ApiModel):
    """The window's newest failed attempt (its response body is in the delivery log)."""

    started_at: Timestamp
    status_code: int | None
    error: str | None = Field(description="error kind, as in a delivery's attempts")
    error_message: str | None = Field(description="at most 300 characters")


class StatsWindowOut(ApiModel):
    attempts: int = Field(description="attempts started in the window, manual ones too")
    succeeded: int
    failed: int
    success_rate: float | None = Field(description="succeeded / attempts; null without attempts")
    latency_ms: LatencyOut
    last_error: LastErrorOut | None


class StatsWindows(ApiModel):
    hour: StatsWindowOut = Field(description="the last hour, up to generatedAt")
    day: StatsWindowOut = Field(description="the last 24 hours, up to generatedAt")


class WebhookStatsOut(ApiModel):
    webhook_id: str
    generated_at: Timestamp
    windows: StatsWindows
