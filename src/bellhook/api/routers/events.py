"""/api/events: admin keys publish Bellamy Book events here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, status

from bellhook.api.deps import AdminDep, RuntimeDep
from bellhook.api.schemas import Envelope, ErrorEnvelope, EventAccepted, EventIn
from bellhook.domain.catalog import WILDCARD, event_type
from bellhook.domain.ids import new_id
from bellhook.domain.jsonbytes import UnrepresentableJson, js_dumps
from bellhook.errors import InvalidInput
from bellhook.store.events import NewEvent

MAX_DATA_BYTES = 256 * 1024

router = APIRouter(
    prefix="/api/events",
    tags=["events"],
    responses={
        401: {"model": ErrorEnvelope},
        403: {"model": ErrorEnvelope},
        422: {"model": ErrorEnvelope},
    },
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
    rt: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Envelope[EventAccepted]:
    now = rt.clock()
    event = new_event(body, idempotency_key=idempotency_key, now=now)
    (accepted,) = await rt.events.ingest([event], now=now)
    if accepted.deliveries and not accepted.duplicate:
        rt.work_available.set()
    return Envelope(
        data=EventAccepted(
            id=accepted.event_id, deliveries=accepted.deliveries, duplicate=accepted.duplicate
        )
    )
