"""Attempts made on request (test sends, manual retries), outside the dispatcher's schedule."""

from __future__ import annotations

from datetime import timedelta

import structlog

from bellhook.delivery.sender import build_request
from bellhook.domain.models import DeliveryStatus
from bellhook.domain.outcome import AttemptResult, Decision
from bellhook.runtime import Runtime
from bellhook.store.deliveries import Completed, Job

log = structlog.get_logger("bellhook.delivery")


async def send_now(rt: Runtime, job: Job, *, final: bool) -> AttemptResult:
    """Send ``job`` once, now, and log the attempt.

    ``final``: the delivery ends with this attempt (a test send). Otherwise it is a
    manual retry: success finishes the delivery, failure leaves its schedule untouched.
    """
    now = rt.clock()
    request = build_request(job, now=now)
    result = await rt.tracing.send(rt.sender, job, request, started_at=now, manual=True)
    decision = None
    if final:
        status = DeliveryStatus.SUCCEEDED if result.succeeded else DeliveryStatus.FAILED
        decision = Decision(status, None, job.schedule_step)
    done = [Completed(job, result, decision)]
    disabled = await rt.deliveries.record(
        done, now=rt.clock(), auto_disable_after=timedelta(seconds=rt.settings.auto_disable_after)
    )
    log.info(
        "delivery.test_sent" if job.is_test else "delivery.manual_attempt",
        delivery_id=job.delivery_id,
        webhook_id=job.webhook_id,
        event_id=job.event_id,
        attempt=job.attempt_count + 1,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        error_kind=str(result.error_kind) if result.error_kind else None,
    )
    rt.metrics.delivered(done, now=rt.clock())
    rt.metrics.disabled(len(disabled))
    for webhook_id in disabled:
        log.warning("webhook.disabled", webhook_id=webhook_id)
    return result
