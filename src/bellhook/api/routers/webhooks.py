"""/api/webhooks: register, list, read, update, delete webhooks, read their secret and
their recent delivery health."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, status

from bellhook.api.deps import PrincipalDep, RuntimeDep
from bellhook.api.schemas import (
    API_ERRORS,
    Envelope,
    LastErrorOut,
    LatencyOut,
    ListEnvelope,
    OkEnvelope,
    Pagination,
    RotateIn,
    SecretOut,
    StatsWindowOut,
    StatsWindows,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookStatsOut,
    WebhookUpdate,
    error_responses,
)
from bellhook.domain.catalog import normalize_subscription
from bellhook.domain.credentials import check_webhook_secret, generate_webhook_secret
from bellhook.domain.models import WebhookStatus
from bellhook.domain.paging import DEFAULT_LIMIT, MAX_LIMIT, Cursor
from bellhook.runtime import Runtime
from bellhook.store.stats import WindowStats, webhook_stats
from bellhook.store.webhooks import WebhookChanges

ERRORS = error_responses(*API_ERRORS, 404)

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], responses=ERRORS)


async def checked_url(rt: Runtime, url: str) -> str:
    return await rt.check_destination(url.strip())


@router.post("", status_code=status.HTTP_201_CREATED, summary="Register a webhook")
async def create_webhook(
    body: WebhookCreate, caller: PrincipalDep, rt: RuntimeDep
) -> Envelope[WebhookCreated]:
    events = normalize_subscription(body.events)
    url = await checked_url(rt, body.url)
    generated = body.secret is None
    secret = generate_webhook_secret() if body.secret is None else check_webhook_secret(body.secret)
    webhook = await rt.webhooks.create(
        caller,
        url=url,
        events=events,
        description=body.description,
        secret=secret,
        now=rt.clock(),
    )
    out = WebhookCreated(
        **WebhookOut.of(webhook).model_dump(), secret=secret if generated else None
    )
    return Envelope(data=out)


@router.get("", summary="List your webhooks, newest first")
async def list_webhooks(
    caller: PrincipalDep,
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ListEnvelope[WebhookOut]:
    page = await rt.webhooks.list(
        caller, limit=limit, cursor=Cursor.decode(cursor) if cursor else None
    )
    return ListEnvelope(
        data=[WebhookOut.of(w) for w in page.items],
        pagination=Pagination(next_cursor=page.next_cursor),
    )


@router.get("/{webhook_id}", summary="Read a webhook")
async def get_webhook(
    webhook_id: str, caller: PrincipalDep, rt: RuntimeDep
) -> Envelope[WebhookOut]:
    return Envelope(data=WebhookOut.of(await rt.webhooks.get(caller, webhook_id)))


async def _update(
    webhook_id: str, body: WebhookUpdate, caller: PrincipalDep, rt: RuntimeDep
) -> Envelope[WebhookOut]:
    await rt.webhooks.get(caller, webhook_id)  # 404 before validating someone else's webhook
    changes = WebhookChanges(
        url=await checked_url(rt, body.url) if body.url is not None else None,
        events=normalize_subscription(body.events) if body.events is not None else None,
        description=body.description,
        clear_description="description" in body.model_fields_set and body.description is None,
        status=WebhookStatus(body.status) if body.status else None,
    )
    webhook = await rt.webhooks.update(caller, webhook_id, changes, now=rt.clock())
    return Envelope(data=WebhookOut.of(webhook))


router.add_api_route(
    "/{webhook_id}",
    _update,
    methods=["PUT"],
    summary="Update a webhook (only the fields sent)",
)
router.add_api_route(
    "/{webhook_id}",
    _update,
    methods=["PATCH"],
    summary="Update a webhook (same as PUT)",
    operation_id="patch_webhook",
)


@router.delete("/{webhook_id}", summary="Delete a webhook; it stops receiving events at once")
async def delete_webhook(webhook_id: str, caller: PrincipalDep, rt: RuntimeDep) -> OkEnvelope:
    await rt.webhooks.delete(caller, webhook_id)
    return OkEnvelope()


@router.get("/{webhook_id}/secret", summary="Read the webhook's signing secret")
async def get_secret(webhook_id: str, caller: PrincipalDep, rt: RuntimeDep) -> Envelope[SecretOut]:
    secrets = await rt.webhooks.secrets(caller, webhook_id)
    now = rt.clock()
    expires = secrets.previous_expires_at if len(secrets.active(now)) > 1 else None
    return Envelope(data=SecretOut(secret=secrets.current, previous_secret_expires_at=expires))


@router.post("/{webhook_id}/secret/rotate", summary="Replace the signing secret")
async def rotate_secret(
    webhook_id: str, caller: PrincipalDep, rt: RuntimeDep, body: RotateIn | None = None
) -> Envelope[SecretOut]:
    """The new secret is returned once. During the grace period every delivery carries
    signatures with both the new and the old secret."""
    body = body or RotateIn()
    new = generate_webhook_secret() if body.secret is None else check_webhook_secret(body.secret)
    secrets = await rt.webhooks.rotate_secret(
        caller,
        webhook_id,
        new_secret=new,
        grace=timedelta(seconds=body.grace_seconds),
        now=rt.clock(),
    )
    return Envelope(
        data=SecretOut(
            secret=secrets.current, previous_secret_expires_at=secrets.previous_expires_at
        )
    )


STATS_WINDOWS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


def stats_window_out(w: WindowStats) -> StatsWindowOut:
    last = w.last_error
    return StatsWindowOut(
        attempts=w.attempts,
        succeeded=w.succeeded,
        failed=w.failed,
        success_rate=w.success_rate,
        latency_ms=LatencyOut(p50=w.latency_ms[50], p99=w.latency_ms[99]),
        last_error=None
        if last is None
        else LastErrorOut(
            started_at=last.started_at,
            status_code=last.status_code,
            error=last.error_kind.value if last.error_kind else None,
            error_message=last.error_message,
        ),
    )


@router.get("/{webhook_id}/stats", summary="The webhook's delivery health: last hour, last day")
async def get_stats(
    webhook_id: str, caller: PrincipalDep, rt: RuntimeDep
) -> Envelope[WebhookStatsOut]:
    """Attempts (automatic and manual), success rate, nearest-rank p50/p99 latency and
    the newest failure, over the hour and the day before ``generatedAt``."""
    await rt.webhooks.get(caller, webhook_id)  # 404 for someone else's webhook
    now = rt.clock()
    windows = await webhook_stats(rt.db, webhook_id, now=now, spans=STATS_WINDOWS)
    return Envelope(
        data=WebhookStatsOut(
            webhook_id=webhook_id,
            generated_at=now,
            windows=StatsWindows(
                hour=stats_window_out(windows["hour"]), day=stats_window_out(windows["day"])
            ),
        )
    )
