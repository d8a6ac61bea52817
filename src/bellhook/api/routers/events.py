"""/api/events: admin keys publish Bellamy Book events here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request, status
from pydantic import ValidationError

from bellhook.api.deps import AdminDep, RuntimeDep, runtime
from bellhook.api.errors import validation_details, validation_summary
from bellhook.api.schemas import (
    API_ERRORS,
    BatchIn,
    BatchItemOut,
    BatchOut,
    Envelope,
    ErrorBody,
    EventAccepted,
    EventIn,
    error_responses,
)
from bellhook.domain.catalog import WILDCARD, event_type
from bellhook.domain.ids import new_id
from bellhook.domain.jsonbytes import UnrepresentableJson, js_dumps
from bellhook.errors import BellhookError, InvalidInput
from bellhook.store.events import NewEvent

MAX_DATA_BYTES = 256 * 1024

router = APIRouter(
    prefix="/api/events",
    tags=["events"],
    responses=error_responses(*API_ERRORS, 403),
)


def new_event(body: EventIn, *, idempotency_key: str | None, now: datetime) -> NewEvent:
    """Validate an incoming event into what the store keeps (pure, for single and batch)."""
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


@router.post("", status_code=status.HTTP_202_ACCEPTED, summary="Publish an event")
async def publish_event(
    body: EventIn,
    _caller: AdminDep,
    request: Request,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
    ] = None,
) -> Envelope[EventAccepted]:
    # The runtime by a call, not as a dependency: FastAPI solving one costs about 6% of
    # this route's instructions, and it runs for every event (docs/benchmarks.md).
    rt = await runtime(request)
    now = rt.clock()
    event = new_event(body, idempotency_key=idempotency_key, now=now)
    accepted = await rt.events.ingest_one(event, now=now)
    return Envelope(
        data=EventAccepted(
            id=accepted.event_id, deliveries=accepted.deliveries, duplicate=accepted.duplicate
        )
    )


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Publish up to 1,000 events at once (each as for POST /api/events)",
)
async def publish_batch(body: BatchIn, _caller: AdminDep, rt: RuntimeDep) -> Envelope[BatchOut]:
    """Valid events are accepted together in one transaction; an invalid one is reported
    at its index and does not stop the others. Idempotent per event id."""
    now = rt.clock()
    results: list[BatchItemOut | None] = [None] * len(body.events)
    valid: list[tuple[int, NewEvent]] = []
    for index, item in enumerate(body.events):
        try:
            valid.append(
                (index, new_event(EventIn.model_validate(item), idempotency_key=None, now=now))
            )
        except ValidationError as exc:
            details = validation_details(exc.errors())
            results[index] = BatchItemOut(
                error=ErrorBody(
                    code="validation_error", message=validation_summary(details), details=details
                )
            )
        except BellhookError as exc:
            results[index] = BatchItemOut(
                error=ErrorBody(code=exc.code, message=exc.message, details=exc.details)
            )
    accepted = await rt.events.ingest([e for _, e in valid], now=now) if valid else []
    for (index, _), outcome in zip(valid, accepted, strict=True):
        results[index] = BatchItemOut(
            id=outcome.event_id, deliveries=outcome.deliveries, duplicate=outcome.duplicate
        )
    items = [r for r in results if r is not None]
    return Envelope(
        data=BatchOut(accepted=len(accepted), rejected=len(items) - len(accepted), results=items)
    )
