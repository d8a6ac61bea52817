"""Attempts made on request (test sends, manual retries), outside the dispatcher's schedule."""

from __future__ import annotations

from datetime import timedelta

from bellhook.delivery.sender import build_request
from bellhook.domain.models import DeliveryStatus
from bellhook.domain.outcome import AttemptResult, Decision
from bellhook.runtime import Runtime
from bellhook.store.deliveries import Completed, Job


async def send_now(rt: Runtime, job: Job, *, final: bool) -> AttemptResult:
    """Send ``job`` once, now, and log the attempt.

    ``final``: the delivery ends with this attempt (a test send). Otherwise it is a
    manual retry: success finishes the delivery, failure leaves its schedule untouched.
    """
    now = rt.clock()
    result = await rt.sender.send(build_request(job, now=now), started_at=now)
    decision = None
    if final:
        status = DeliveryStatus.SUCCEEDED if result.succeeded else DeliveryStatus.FAILED
        decision = Decision(status, None, job.schedule_step)
    await rt.deliveries.record(
        [Completed(job, result, decision)],
        now=rt.clock(),
        auto_disable_after=timedelta(seconds=rt.settings.auto_disable_after),
    )
    return result
