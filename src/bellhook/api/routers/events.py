"""/api/events: admin keys publish Bellamy Book events here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Header, Request, status

from bellhook.api.deps import AdminDep, RuntimeDep, runtime
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
from bellhook.ingest.intake import Refusal, accept_item, new_event
from bellhook.runtime import Runtime
from bellhook.store.events import Accepted, NewEvent

log = structlog.get_logger("bellhook.api")

router = APIRouter(
    prefix="/api/events",
    tags=["events"],
    responses=error_responses(*API_ERRORS, 403),
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
    if rt.tracing.on:
        accepted = await _ingest_one_traced(rt, request, event, now)
    else:
        accepted = await rt.events.ingest_one(event, now=now)
    rt.metrics.ingested_events("http", (event.type,), (accepted.duplicate,))
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
async def publish_batch(
    body: BatchIn, _caller: AdminDep, rt: RuntimeDep, request: Request
) -> Envelope[BatchOut]:
    """Valid events are accepted together in one transaction; an invalid one is reported
    at its index and does not stop the others. Idempotent per event id."""
    now = rt.clock()
    results: list[BatchItemOut | None] = [None] * len(body.events)
    valid: list[tuple[int, NewEvent]] = []
    for index, item in enumerate(body.events):
        accepted_item = accept_item(item, idempotency_key=None, now=now)
        if isinstance(accepted_item, Refusal):
            results[index] = BatchItemOut(
                error=ErrorBody(
                    code=accepted_item.code,
                    message=accepted_item.message,
                    details=accepted_item.details,
                )
            )
        else:
            valid.append((index, accepted_item))
    events = [e for _, e in valid]
    accepted: list[Accepted] = []
    if events and rt.tracing.on:
        # A publisher's traceparent (a W3C header) continues in the ingest span.
        with rt.tracing.ingest("batch", events, carrier=request.headers) as span:
            accepted = await rt.events.ingest(span.traced(events), now=now)
            span.accepted(accepted)
    elif events:
        accepted = await rt.events.ingest(events, now=now)
    rt.metrics.ingested_events("batch", [e.type for _, e in valid], [a.duplicate for a in accepted])
    if len(valid) < len(body.events):
        refused = [(i, r.error.code) for i, r in enumerate(results) if r and r.error]
        rt.metrics.rejected_events("batch", (code for _, code in refused))
        log.info(
            "ingest.refused",
            source="batch",
            refused=len(refused),
            items=[{"index": i, "code": code} for i, code in refused[:20]],
        )
    for (index, _), outcome in zip(valid, accepted, strict=True):
        results[index] = BatchItemOut(
            id=outcome.event_id, deliveries=outcome.deliveries, duplicate=outcome.duplicate
        )
    items = [r for r in results if r is not None]
    return Envelope(
        data=BatchOut(accepted=len(accepted), rejected=len(items) - len(accepted), results=items)
    )


async def _ingest_one_traced(
    rt: Runtime, request: Request, event: NewEvent, now: datetime
) -> Accepted:
    """``ingest_one`` in an ingest span, continuing a publisher's ``traceparent``."""
    with rt.tracing.ingest("http", (event,), carrier=request.headers) as span:
        (traced,) = span.traced((event,))
        accepted = await rt.events.ingest_one(traced, now=now)
        span.accepted((accepted,))
    return accepted
