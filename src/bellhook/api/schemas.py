"""Request and response bodies of the HTTP API (pydantic), in the guide's envelope."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from bellhook.domain.catalog import EventType
from bellhook.domain.models import Webhook

T = TypeVar("T")


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as the guide writes timestamps."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


# --- webhooks --------------------------------------------------------------------------

Url = Annotated[str, Field(min_length=1, max_length=2048, examples=["https://your-app.com/webhook"])]
EventNames = Annotated[
    list[Annotated[str, Field(max_length=128)]],
    Field(min_length=1, max_length=50, examples=[["post.created", "comment.created"]]),
]
Description = Annotated[str, Field(max_length=1024)]
Secret = Annotated[str, Field(min_length=16, max_length=256)]


class WebhookCreate(RequestModel):
    url: Url
    events: EventNames
    secret: Secret | None = Field(
        default=None, description="16–256 characters; generated (whsec_…) when absent"
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
            id=webhook.id, url=webhook.url, events=list(webhook.events),
            status=webhook.status.value, description=webhook.description,
            disabled_reason=webhook.disabled_reason, created_at=webhook.created_at,
            updated_at=webhook.updated_at,
        )


class WebhookCreated(WebhookOut):
    secret: str | None = Field(
        default=None, description="only when bellhook generated the secret; shown this once"
    )


class SecretOut(ApiModel):
    secret: str
    previous_secret_expires_at: Timestamp | None = None


class EventTypeOut(ApiModel):
    name: str
    description: str
    example: dict[str, Any]

    @classmethod
    def of(cls, event_type: EventType) -> EventTypeOut:
        return cls(
            name=event_type.name, description=event_type.description,
            example=dict(event_type.example),
        )


class Health(ApiModel):
    status: Literal["ok"]
    database: Literal["ok"]
    version: str
