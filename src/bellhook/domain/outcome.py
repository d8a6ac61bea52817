"""What one HTTP attempt means for its delivery and its webhook.

Pure: given the attempt's result and the delivery's state, decide the next state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bellhook.domain.models import DeliveryStatus, ErrorKind
from bellhook.domain.retry import RetryPolicy

EXCERPT_BYTES = 4096


# Not frozen, like Job: made per delivery, and frozen __init__ is 2-3x slower.
@dataclass(slots=True)
class AttemptResult:
    """What the sender observed."""

    started_at: datetime
    latency_ms: float
    status_code: int | None = None
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    response_excerpt: str | None = None
    retry_after: float | None = None  # seconds, from a 429/503 Retry-After header

    @property
    def succeeded(self) -> bool:
        return (
            self.error_kind is None
            and self.status_code is not None
            and (200 <= self.status_code < 300)
        )

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def classify_status(status_code: int) -> ErrorKind | None:
    if 200 <= status_code < 300:
        return None
    if 300 <= status_code < 400:
        return ErrorKind.REDIRECT
    return ErrorKind.HTTP_STATUS


@dataclass(slots=True)  # not frozen: made per delivery (see AttemptResult)
class Decision:
    status: DeliveryStatus
    next_attempt_at: datetime | None
    schedule_step: int

    @property
    def retry_scheduled(self) -> bool:
        return self.status is DeliveryStatus.PENDING


def decide(
    result: AttemptResult,
    *,
    schedule_step: int,
    policy: RetryPolicy,
    now: datetime,
    rand: float,
) -> Decision:
    """The delivery's next state after a scheduled attempt.

    ``schedule_step`` counts the scheduled failures so far (manual attempts do not count).
    """
    if result.succeeded:
        return Decision(DeliveryStatus.SUCCEEDED, None, schedule_step)
    if result.gone:
        return Decision(DeliveryStatus.FAILED, None, schedule_step + 1)  # see disable_reason
    failures = schedule_step + 1
    retry_after = result.retry_after if result.status_code in (429, 503) else None
    delay = policy.delay_after(failures, rand=rand, retry_after=retry_after)
    if delay is None:
        return Decision(DeliveryStatus.FAILED, None, failures)
    return Decision(DeliveryStatus.PENDING, now + timedelta(seconds=delay), failures)


_NO_ANSWER = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.DNS, ErrorKind.TLS})


def went_unanswered(result: AttemptResult) -> bool:
    """Whether the receiver gave no HTTP answer at all (down, hanging, unreachable):
    more requests at once would only wait the same way."""
    return result.error_kind in _NO_ANSWER


def disable_reason(result: AttemptResult) -> str | None:
    """Why this answer disables its webhook at once (410 Gone, even to a test or a manual
    retry: the receiver says the endpoint is gone for good), or None."""
    return "the receiver answered 410 Gone" if result.gone else None


def auto_disable_reason(after: timedelta) -> str:
    seconds = after.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            amount = seconds / size
            return f"every delivery failed for {amount:g} {unit}{'s' if amount != 1 else ''}"
    return f"every delivery failed for {seconds:g} seconds"


def excerpt(body: bytes) -> str:
    return body[:EXCERPT_BYTES].decode("utf-8", errors="replace")
