"""The per-key token bucket, driven by a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bellhook.api.ratelimit import ApiRateLimits, RateLimiter
from bellhook.config import Settings
from bellhook.domain.models import Principal
from bellhook.errors import RateLimited

ALICE = Principal(key_id="key_alice", owner_id="alice", is_admin=False)
BOB = Principal(key_id="key_bob", owner_id="bob", is_admin=False)
ADMIN = Principal(key_id="key_admin", owner_id="backend", is_admin=True)


def test_a_burst_up_to_the_limit_then_refused() -> None:
    limiter = RateLimiter(5)
    assert [limiter.acquire("k", 100.0) for _ in range(5)] == [0.0] * 5
    wait = limiter.acquire("k", 100.0)
    # One token refills every 60/5 = 12 s.
    assert wait == pytest.approx(12.0)
    # A refused call is not counted: asking again right away gives the same answer.
    assert limiter.acquire("k", 100.0) == pytest.approx(12.0)


def test_tokens_refill_continuously() -> None:
    limiter = RateLimiter(60)  # one a second
    for _ in range(60):
        assert limiter.acquire("k", 0.0) == 0.0
    assert limiter.acquire("k", 0.5) == pytest.approx(0.5)
    assert limiter.acquire("k", 1.0) == 0.0
    assert limiter.acquire("k", 1.0) == pytest.approx(1.0)
    # After a full period the bucket is full again, and never fuller.
    for _ in range(60):
        assert limiter.acquire("k", 1000.0) == 0.0
    assert limiter.acquire("k", 1000.0) > 0


def test_keys_are_independent() -> None:
    limiter = RateLimiter(2)
    assert limiter.acquire("a", 0.0) == 0.0
    assert limiter.acquire("a", 0.0) == 0.0
    assert limiter.acquire("a", 0.0) > 0
    assert limiter.acquire("b", 0.0) == 0.0


def test_a_clock_stepping_back_refills_nothing() -> None:
    limiter = RateLimiter(1)
    assert limiter.acquire("k", 50.0) == 0.0
    assert limiter.acquire("k", 10.0) > 0
    assert limiter.acquire("k", 49.0) > 0
    assert limiter.acquire("k", 110.0) == 0.0


def test_idle_buckets_are_forgotten() -> None:
    limiter = RateLimiter(3)
    for n in range(100):
        limiter.acquire(f"key-{n}", 0.0)
    assert limiter.tracked() == 100
    limiter.acquire("late", 30.0)
    assert limiter.tracked() == 101  # nothing is stale yet
    limiter.acquire("later", 61.0)
    assert limiter.tracked() == 2  # only those used within the last minute


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), max_size=300),
)
def test_never_more_than_limit_plus_refill_in_any_window(limit: int, gaps: list[float]) -> None:
    """Within any span of t seconds at most limit + limit * t / 60 calls get through."""
    limiter = RateLimiter(limit)
    now, allowed = 0.0, []
    for gap in gaps:
        now += gap
        if limiter.acquire("k", now) == 0.0:
            allowed.append(now)
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            span = allowed[j] - start
            assert j - i + 1 <= limit + limit * span / 60 + 1e-6


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(min_value=1, max_value=100), start=st.floats(0, 1e6))
def test_waiting_the_answer_is_enough(limit: int, start: float) -> None:
    limiter = RateLimiter(limit)
    for _ in range(limit):
        assert limiter.acquire("k", start) == 0.0
    wait = limiter.acquire("k", start)
    assert wait > 0
    assert limiter.acquire("k", start + wait + 1e-6) == 0.0


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(5, period=0)


# --- ApiRateLimits: which keys, which limit, which error ------------------------------


def test_ordinary_keys_are_limited_and_the_error_says_when_to_retry() -> None:
    limits = ApiRateLimits(limit=2, admin_limit=None)
    limits.check(ALICE, 0.0)
    limits.check(ALICE, 0.0)
    with pytest.raises(RateLimited) as caught:
        limits.check(ALICE, 0.0)
    error = caught.value
    assert error.retry_after == 30  # 60 s / 2 calls
    assert error.code == "rate_limited"
    assert "at most 2 a minute" in error.message
    assert "BELLHOOK_RATE_LIMIT" in error.message
    assert error.details == [{"limit": 2, "period": 60, "retryAfter": 30}]
    limits.check(BOB, 0.0)  # another key is not affected
    limits.check(ALICE, 30.0)


def test_retry_after_is_a_whole_number_of_seconds_at_least_one() -> None:
    limits = ApiRateLimits(limit=600, admin_limit=None)  # a token every 0.1 s
    for _ in range(600):
        limits.check(ALICE, 0.0)
    with pytest.raises(RateLimited) as caught:
        limits.check(ALICE, 0.0)
    assert caught.value.retry_after == 1


def test_admin_keys_are_not_limited_unless_configured() -> None:
    limits = ApiRateLimits(limit=1, admin_limit=None)
    for _ in range(1000):
        limits.check(ADMIN, 0.0)

    limits = ApiRateLimits(limit=1, admin_limit=3)
    for _ in range(3):
        limits.check(ADMIN, 0.0)
    with pytest.raises(RateLimited) as caught:
        limits.check(ADMIN, 0.0)
    assert "BELLHOOK_ADMIN_RATE_LIMIT" in caught.value.message
    assert caught.value.retry_after == 20
    limits.check(ALICE, 0.0)  # separate buckets, separate limits


def test_a_limit_of_zero_turns_it_off() -> None:
    limits = ApiRateLimits(limit=0, admin_limit=None)
    for _ in range(1000):
        limits.check(ALICE, 0.0)


def test_from_settings() -> None:
    defaults = ApiRateLimits.from_settings(Settings())
    assert defaults.keys is not None and defaults.keys.limit == 600
    assert defaults.admin_keys is None
    custom = ApiRateLimits.from_settings(Settings(rate_limit=7, admin_rate_limit=9))
    assert custom.keys is not None and custom.keys.limit == 7
    assert custom.admin_keys is not None and custom.admin_keys.limit == 9


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BELLHOOK_RATE_LIMIT", "42")
    monkeypatch.setenv("BELLHOOK_ADMIN_RATE_LIMIT", "1000")
    settings = Settings()
    assert (settings.rate_limit, settings.admin_rate_limit) == (42, 1000)
