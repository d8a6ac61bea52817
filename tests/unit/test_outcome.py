"""decide, classify_status, disable_reason and excerpt: what one attempt means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bellhook.domain.models import DeliveryStatus, ErrorKind
from bellhook.domain.outcome import (
    EXCERPT_BYTES,
    AttemptResult,
    classify_status,
    decide,
    disable_reason,
    excerpt,
    went_unanswered,
)
from bellhook.domain.retry import RetryPolicy

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
POLICY = RetryPolicy((5.0, 300.0, 1800.0), jitter=0.2)


def result(
    status_code: int | None = None,
    error_kind: ErrorKind | None = None,
    retry_after: float | None = None,
) -> AttemptResult:
    if status_code is not None and error_kind is None:
        error_kind = classify_status(status_code)
    return AttemptResult(
        started_at=NOW, latency_ms=12.5, status_code=status_code, error_kind=error_kind,
        retry_after=retry_after,
    )  # fmt: skip


# --- classify_status / succeeded ---------------------------------------------------------


@pytest.mark.parametrize("code", [200, 201, 202, 204, 299])
def test_any_2xx_is_success(code: int) -> None:
    assert classify_status(code) is None
    assert result(code).succeeded


@pytest.mark.parametrize("code", [300, 301, 302, 303, 304, 307, 308, 399])
def test_3xx_is_a_redirect_failure(code: int) -> None:
    assert classify_status(code) is ErrorKind.REDIRECT
    assert not result(code).succeeded


@pytest.mark.parametrize("code", [100, 199, 400, 404, 410, 429, 500, 503, 599])
def test_other_statuses_are_http_failures(code: int) -> None:
    assert classify_status(code) is ErrorKind.HTTP_STATUS
    assert not result(code).succeeded


def test_no_status_is_not_success() -> None:
    assert not result(None, ErrorKind.TIMEOUT).succeeded
    assert not result(None).succeeded
    # A 200 with an error (e.g. body too large) is not a success either.
    assert not result(200, ErrorKind.TOO_LARGE).succeeded


# --- decide -------------------------------------------------------------------------------


def test_success_finishes_the_delivery() -> None:
    d = decide(result(200), schedule_step=2, policy=POLICY, now=NOW, rand=0.5)
    assert d.status is DeliveryStatus.SUCCEEDED
    assert d.next_attempt_at is None
    assert d.schedule_step == 2
    assert disable_reason(result(200)) is None
    assert not d.retry_scheduled


@pytest.mark.parametrize("step", [0, 1, 3])
def test_gone_fails_at_once_and_disables(step: int) -> None:
    d = decide(result(410), schedule_step=step, policy=POLICY, now=NOW, rand=0.5)
    assert d.status is DeliveryStatus.FAILED
    assert d.next_attempt_at is None
    assert disable_reason(result(410))
    assert not d.retry_scheduled


@pytest.mark.parametrize(
    "failed",
    [
        result(500),
        result(404),
        result(302),
        result(None, ErrorKind.TIMEOUT),
        result(None, ErrorKind.CONNECTION),
        result(None, ErrorKind.DNS),
    ],
)
def test_a_failure_schedules_the_next_step(failed: AttemptResult) -> None:
    d = decide(failed, schedule_step=0, policy=POLICY, now=NOW, rand=0.5)
    assert d.status is DeliveryStatus.PENDING
    assert d.retry_scheduled
    assert d.next_attempt_at == NOW + timedelta(seconds=5)
    assert d.schedule_step == 1
    assert disable_reason(failed) is None


def test_each_step_uses_its_delay() -> None:
    steps = []
    for step in range(3):
        d = decide(result(500), schedule_step=step, policy=POLICY, now=NOW, rand=0.5)
        assert d.next_attempt_at is not None
        steps.append((d.next_attempt_at - NOW).total_seconds())
        assert d.schedule_step == step + 1
    assert steps == pytest.approx([5.0, 300.0, 1800.0])


def test_jitter_reaches_decide() -> None:
    d = decide(result(500), schedule_step=1, policy=POLICY, now=NOW, rand=0.0)
    assert d.next_attempt_at == NOW + timedelta(seconds=240)


def test_the_last_scheduled_failure_fails_the_delivery() -> None:
    d = decide(result(500), schedule_step=3, policy=POLICY, now=NOW, rand=0.5)
    assert d.status is DeliveryStatus.FAILED
    assert d.next_attempt_at is None
    assert d.schedule_step == 4
    assert disable_reason(result(500)) is None


def test_manual_attempts_do_not_count() -> None:
    """Only ``schedule_step`` (scheduled failures) decides the delay, never the attempt count.

    A delivery retried by hand ten times but with one scheduled failure is on step two.
    """
    d = decide(result(500), schedule_step=1, policy=POLICY, now=NOW, rand=0.5)
    assert d.next_attempt_at == NOW + timedelta(seconds=300)
    assert d.schedule_step == 2


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_of_429_and_503_is_honoured(code: int) -> None:
    d = decide(result(code, retry_after=60.0), schedule_step=0, policy=POLICY, now=NOW, rand=0.5)
    assert d.next_attempt_at == NOW + timedelta(seconds=60)
    capped = decide(
        result(code, retry_after=99_999.0), schedule_step=0, policy=POLICY, now=NOW, rand=0.5
    )
    assert capped.next_attempt_at == NOW + timedelta(seconds=300)


@pytest.mark.parametrize("code", [500, 502, 404])
def test_retry_after_of_other_statuses_is_ignored(code: int) -> None:
    d = decide(result(code, retry_after=60.0), schedule_step=0, policy=POLICY, now=NOW, rand=0.5)
    assert d.next_attempt_at == NOW + timedelta(seconds=5)


def test_retry_after_does_not_extend_the_schedule() -> None:
    d = decide(result(429, retry_after=60.0), schedule_step=3, policy=POLICY, now=NOW, rand=0.5)
    assert d.status is DeliveryStatus.FAILED


def test_empty_schedule_fails_on_the_first_failure() -> None:
    d = decide(result(500), schedule_step=0, policy=RetryPolicy(()), now=NOW, rand=0.5)
    assert d.status is DeliveryStatus.FAILED
    assert d.schedule_step == 1


# --- excerpt ------------------------------------------------------------------------------


def test_excerpt_is_at_most_4_kib() -> None:
    assert EXCERPT_BYTES == 4096
    assert excerpt(b"x" * (1024 * 1024)) == "x" * 4096
    assert excerpt(b"short") == "short"
    assert excerpt(b"") == ""


def test_excerpt_never_raises_on_bytes_that_are_not_utf8() -> None:
    text = excerpt(b"\xff\xfe" + "é".encode() * 3000)
    assert len(text) <= 4096
    assert text.startswith("\ufffd")


@pytest.mark.parametrize(
    ("kind", "unanswered"),
    [
        (ErrorKind.TIMEOUT, True),
        (ErrorKind.CONNECTION, True),
        (ErrorKind.DNS, True),
        (ErrorKind.TLS, True),
        (ErrorKind.HTTP_STATUS, False),
        (ErrorKind.REDIRECT, False),
        (ErrorKind.TOO_LARGE, False),
        (ErrorKind.BLOCKED_DESTINATION, False),
        (None, False),
    ],
)
def test_only_attempts_without_any_http_answer_went_unanswered(
    kind: ErrorKind | None, unanswered: bool
) -> None:
    result = AttemptResult(
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        latency_ms=1.0,
        status_code=None if unanswered else 500,
        error_kind=kind,
    )
    assert went_unanswered(result) is unanswered
