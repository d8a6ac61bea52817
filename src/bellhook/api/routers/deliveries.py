"""/api/webhooks/{id}/deliveries, /recover and /test: what happened, and sending again."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from bellhook.api.deps import PrincipalDep, RuntimeDep
from bellhook.api.routers.webhooks import ERRORS
from bellhook.api.schemas import (
    AttemptOut,
    AttemptOutcome,
    DeliveryDetail,
    DeliveryOut,
    Envelope,
    ListEnvelope,
    Pagination,
    RecoverIn,
    RecoverOut,
    TestIn,
)
from bellhook.delivery.manual import send_now
from bellhook.domain.catalog import event_type
from bellhook.domain.ids import new_id
from bellhook.domain.jsonbytes import js_dumps
from bellhook.domain.models import Attempt, Delivery, DeliveryStatus
from bellhook.domain.outcome import AttemptResult
from bellhook.domain.paging import DEFAULT_LIMIT, MAX_LIMIT, Cursor
from bellhook.store.events import NewEvent

router = APIRouter(prefix="/api/webhooks/{webhook_id}", tags=["deliveries"], responses=ERRORS)


def delivery_out(d: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        event_id=d.event_id,
        event=d.event_type,
        status=d.status.value,
        attempt_count=d.attempt_count,
        next_attempt_at=d.next_attempt_at if d.status is DeliveryStatus.PENDING else None,
        last_status_code=d.last_status_code,
        last_error=d.last_error_kind.value if d.last_error_kind else None,
        test=d.is_test,
        created_at=d.created_at,
        updated_at=d.updated_at,
    )


def attempt_out(a: Attempt) -> AttemptOut:
    return AttemptOut(
        id=a.id,
        number=a.number,
        manual=a.manual,
        started_at=a.started_at,
        status_code=a.status_code,
        latency_ms=a.latency_ms,
        error=a.error_kind.value if a.error_kind else None,
        error_message=a.error_message,
        response_body=a.response_excerpt,
    )


def outcome_out(delivery_id: str, event_id: str, r: AttemptResult) -> AttemptOutcome:
    return AttemptOutcome(
        delivery_id=delivery_id,
        event_id=event_id,
        success=r.succeeded,
        status_code=r.status_code,
        latency_ms=r.latency_ms,
        error=r.error_kind.value if r.error_kind else None,
        error_message=r.error_message,
    )


@router.get("/deliveries", summary="The webhook's delivery log, newest first")
async def list_deliveries(
    webhook_id: str,
    caller: PrincipalDep,
    rt: RuntimeDep,
    status: Annotated[Literal["pending", "succeeded", "failed"] | None, Query()] = None,
    event: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ListEnvelope[DeliveryOut]:
    await rt.webhooks.get(caller, webhook_id)
    if event is not None:
        event_type(event)
    page = await rt.deliveries.page(
        webhook_id,
        status=DeliveryStatus(status) if status else None,
        event_type=event,
        limit=limit,
        cursor=Cursor.decode(cursor) if cursor else None,
    )
    return ListEnvelope(
        data=[delivery_out(d) for d in page.items],
        pagination=Pagination(next_cursor=page.next_cursor),
    )


@router.get("/deliveries/{delivery_id}", summary="One delivery with every attempt")
async def get_delivery(
    webhook_id: str, delivery_id: str, caller: PrincipalDep, rt: RuntimeDep
) -> Envelope[DeliveryDetail]:
    await rt.webhooks.get(caller, webhook_id)
    delivery, attempts = await rt.deliveries.get(webhook_id, delivery_id)
    return Envelope(
        data=DeliveryDetail(
            **delivery_out(delivery).model_dump(), attempts=[attempt_out(a) for a in attempts]
        )
    )


@router.post(
    "/deliveries/{delivery_id}/retry",
    summary="Send a delivery again now (does not consume its retry schedule)",
)
async def retry_delivery(
    webhook_id: str, delivery_id: str, caller: PrincipalDep, rt: RuntimeDep
) -> Envelope[AttemptOutcome]:
    await rt.webhooks.get(caller, webhook_id)
    job = await rt.deliveries.job(webhook_id, delivery_id)
    result = await send_now(rt, job, final=False)
    return Envelope(data=outcome_out(job.delivery_id, job.event_id, result))


@router.post("/recover", summary="Resend every failed delivery since a time")
async def recover(
    webhook_id: str, body: RecoverIn, caller: PrincipalDep, rt: RuntimeDep
) -> Envelope[RecoverOut]:
    await rt.webhooks.get(caller, webhook_id)
    since = body.since if body.since.tzinfo else body.since.replace(tzinfo=UTC)
    count = await rt.deliveries.recover(webhook_id, since=since, now=rt.clock())
    if count:
        rt.work_available.set()
    return Envelope(data=RecoverOut(resent=count))


@router.post("/test", summary="Send a signed sample event to the webhook now")
async def send_test(
    webhook_id: str, caller: PrincipalDep, rt: RuntimeDep, body: TestIn | None = None
) -> Envelope[AttemptOutcome]:
    await rt.webhooks.get(caller, webhook_id)
    sample = event_type((body or TestIn()).event)
    now = rt.clock()
    event = NewEvent(
        id=new_id("evt"),
        type=sample.name,
        data_json=js_dumps(dict(sample.example)),
        timestamp=now,
        audience=None,
    )
    delivery_id = await rt.events.schedule_test(event, webhook_id, now=now)
    job = await rt.deliveries.job(webhook_id, delivery_id)
    result = await send_now(rt, job, final=True)
    return Envelope(data=outcome_out(delivery_id, event.id, result))
