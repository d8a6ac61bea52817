"""The rules an incoming event meets, whichever way it arrives.

``POST /api/events``, ``POST /api/events/batch`` and the Kafka consumer all turn what
they receive into ``NewEvent``s here, so an event is validated, identified and refused
the same way over HTTP and over Kafka. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bellhook.api.schemas import EventIn  # pydantic only: no FastAPI below the API
from bellhook.domain.catalog import WILDCARD, event_type
from bellhook.domain.ids import new_id
from bellhook.domain.jsonbytes import UnrepresentableJson, js_dumps
from bellhook.errors import BellhookError, InvalidInput
from bellhook.store.events import NewEvent

MAX_DATA_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why one incoming event cannot be accepted, as the API's error body says it."""

    code: str
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)


def new_event(body: EventIn, *, idempotency_key: str | None, now: datetime) -> NewEvent:
    """Validate an incoming event into what the store keeps.

    Its id is the one it names, else ``idempotency_key`` (the HTTP header, or the id the
    Kafka consumer derives from the message's position), else a new one.
    """
    event_type(body.event)
    try:
        data_json = js_dumps(body.data, root="data")
    except UnrepresentableJson as exc:
        raise InvalidInput(str(exc), details=[{"field": exc.path or "data"}]) from exc
    if len(data_json.encode("utf-8", "surrogatepass")) > MAX_DATA_BYTES:
        raise InvalidInput(
            f"data is larger than {MAX_DATA_BYTES // 1024} KiB once serialized",
            details=[{"field": "data", "limit": MAX_DATA_BYTES}],
        )
    timestamp = body.timestamp or now
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    audience: tuple[str, ...] | None
    if body.audience is None:
        audience = None
    elif body.audience == WILDCARD:
        audience = (WILDCARD,)
    else:
        audience = tuple(dict.fromkeys(body.audience))
    return NewEvent(
        id=body.id or idempotency_key or new_id("evt"),
        type=body.event,
        data_json=data_json,
        timestamp=timestamp,
        audience=audience,
    )


def accept_item(item: Any, *, idempotency_key: str | None, now: datetime) -> NewEvent | Refusal:
    """One event of a batch (a JSON value not yet validated): the event, or why not."""
    try:
        return new_event(EventIn.model_validate(item), idempotency_key=idempotency_key, now=now)
    except ValidationError as exc:
        details = validation_details(exc.errors())
        return Refusal("validation_error", validation_summary(details), details)
    except BellhookError as exc:
        return Refusal(exc.code, exc.message, exc.details)


def _field_path(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_summary(details: Sequence[dict[str, Any]]) -> str:
    """One sentence naming the first few fields that are wrong."""
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return summary or "the request is not valid"


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic's errors as ``{"field", "message", "type"}`` items."""
    details = []
    for err in errors:
        item: dict[str, Any] = {
            "field": _field_path(err.get("loc", ())),
            "message": err["msg"],
            "type": err["type"],
        }
        details.append(item)
    return details
