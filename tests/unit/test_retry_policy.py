"""RetryPolicy.delay_after and parse_retry_after: the schedule, jitter, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from bellhook.config import DEFAULT_RETRY_SCHEDULE, Settings
from bellhook.domain.retry import RetryPolicy, parse_retry_after

SCHEDULE = (5.0, 300.0, 1800.0)
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


# --- the schedule ----------------------------------------------------------------------------


@pytest.mark.parametrize(("failures", "base"), [(1, 5.0), (2, 300.0), (3, 1800.0)])
def test_middle_of_the_jitter_is_the_schedule(failures: int, base: float) -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.2)
    assert policy.delay_after(failures, rand=0.5) == pytest.approx(base)


def test_without_jitter_rand_does_not_matter() -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.0)
    for rand in (0.0, 0.5, 0.999):
        assert policy.delay_after(2, rand=rand) == 300.0


@pytest.mark.parametrize("failures", [1, 2, 3])
def test_jitter_bounds(failures: int) -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.2)
    base = SCHEDULE[failures - 1]
    low = policy.delay_after(failures, rand=0.0)
    mid = policy.delay_after(failures, rand=0.5)
    high = policy.delay_after(failures, rand=0.999)
    assert low is not None and mid is not None and high is not None
    assert low == pytest.approx(0.8 * base)
    assert high == pytest.approx(base * (1 + 0.2 * 0.998))
    assert 0.8 * base <= low < mid < high < 1.2 * base


def test_jitter_is_monotonic_in_rand() -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.5)
    delays = [policy.delay_after(1, rand=r / 100) for r in range(100)]
    assert delays == sorted(delays)
    assert all(d is not None and 2.5 <= d < 7.5 for d in delays)


def test_last_attempt_gives_up() -> None:
    policy = RetryPolicy(SCHEDULE)
    assert policy.max_attempts == 4
    assert policy.delay_after(3, rand=0.5) is not None
    assert policy.delay_after(4, rand=0.5) is None
    assert policy.delay_after(5, rand=0.5) is None
    assert policy.delay_after(4, rand=0.5, retry_after=1.0) is None


def test_zero_failures_is_not_a_retry() -> None:
    assert RetryPolicy(SCHEDULE).delay_after(0, rand=0.5) is None


def test_empty_schedule_means_one_attempt() -> None:
    policy = RetryPolicy(())
    assert policy.max_attempts == 1
    assert policy.delay_after(1, rand=0.5) is None


def test_zero_steps_are_never_negative() -> None:
    policy = RetryPolicy((0.0, 0.0), jitter=0.9)
    assert policy.delay_after(1, rand=0.0) == 0.0
    assert policy.delay_after(2, rand=0.999) == 0.0


def test_default_schedule_is_the_settings_one() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert RetryPolicy(settings.retry_schedule).max_attempts == len(DEFAULT_RETRY_SCHEDULE) + 1
    assert Settings(retry_schedule="0.2, 0.4,0.8").retry_schedule == (0.2, 0.4, 0.8)
    assert Settings(retry_schedule="").retry_schedule == ()


# --- Retry-After ------------------------------------------------------------------------------


def test_retry_after_longer_than_the_delay_is_honoured() -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.2)
    assert policy.delay_after(1, rand=0.5, retry_after=100.0) == 100.0


def test_retry_after_is_capped_at_the_following_step() -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.2)
    assert policy.delay_after(1, rand=0.5, retry_after=10_000.0) == 300.0
    assert policy.delay_after(2, rand=0.5, retry_after=10_000.0) == 1800.0
    assert policy.delay_after(1, rand=0.999, retry_after=300.0) == 300.0


def test_retry_after_on_the_last_step_is_capped_at_that_step() -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.2)
    assert policy.delay_after(3, rand=0.0, retry_after=10_000.0) == 1800.0


def test_retry_after_shorter_than_the_delay_does_not_shorten_it() -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.2)
    assert policy.delay_after(2, rand=0.5, retry_after=1.0) == pytest.approx(300.0)
    assert policy.delay_after(2, rand=0.0, retry_after=0.0) == pytest.approx(240.0)


def test_retry_after_never_shortens_a_jittered_delay_above_the_cap() -> None:
    # Jitter may put the delay above the next step; Retry-After never lowers it.
    policy = RetryPolicy((10.0, 10.0), jitter=0.5)
    delay = policy.delay_after(1, rand=0.999, retry_after=12.0)
    assert delay == pytest.approx(10.0 * (1 + 0.5 * 0.998))


# --- parse_retry_after -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("1", 1.0), ("120", 120.0), (" 30 ", 30.0), ("86400", 86400.0)],
)
def test_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_http_date_in_the_future() -> None:
    when = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert when.endswith("GMT")
    assert parse_retry_after(when, now=NOW) == 90.0


def test_http_date_with_numeric_zone() -> None:
    assert parse_retry_after("Wed, 01 May 2024 14:00:30 +0200", now=NOW) == 30.0


def test_http_date_in_the_past_is_now() -> None:
    when = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(when, now=NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "1.5",
        "5s",
        "0x10",
        "Wed, 99 Foo 2024",
        "2024-05-01T12:01:00Z",
    ],
)
def test_garbage_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_date_without_a_zone_is_ignored() -> None:
    assert parse_retry_after("Wed, 01 May 2024 12:01:00 -0000", now=NOW) is None
