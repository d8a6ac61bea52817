"""Per-key API rate limits: an in-process token bucket per API key.

Each key has a bucket of ``limit`` calls that refills continuously at ``limit``
calls a minute: a key may burst up to ``limit`` calls, and sustain ``limit`` a
minute. Buckets live in this process only, so with N API processes a key gets
up to N times the limit. Keys are limited after authentication (by key id), so
nobody can use up someone else's allowance with a key they do not hold.

``RateLimiter`` is pure: the caller passes the time (``time.monotonic()`` in the
app, a fake clock in tests). Written here rather than taken from ``limits``/``slowapi``:
those bring storage backends and decorators we do not use, and a pure token bucket is
a few lines that tests can drive with a fake clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bellhook.config import Settings
from bellhook.domain.models import Principal
from bellhook.errors import RateLimited

PERIOD = 60.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``limit`` calls per ``period`` seconds per key, as a token bucket."""

    def __init__(self, limit: int, *, period: float = PERIOD) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if period <= 0:
            raise ValueError("period must be positive")
        self.limit = limit
        self.period = period
        self._rate = limit / period  # tokens per second
        self._buckets: dict[str, _Bucket] = {}
        self._next_prune = 0.0

    def acquire(self, key: str, now: float) -> float:
        """Take one call for ``key`` at ``now`` (seconds).

        Returns 0.0 if the call is allowed, else the seconds until one would be
        (the call is then not counted).
        """
        self._prune(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(self.limit), updated=now)
        else:
            elapsed = max(0.0, now - bucket.updated)  # a clock that steps back refills nothing
            bucket.tokens = min(float(self.limit), bucket.tokens + elapsed * self._rate)
            bucket.updated = max(bucket.updated, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def tracked(self) -> int:
        """How many keys have a bucket that is not full (for tests and metrics)."""
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        # A bucket untouched for a whole period is full again: forgetting it changes
        # nothing, and keeps memory bounded by the keys active in the last period.
        if now < self._next_prune:
            return
        self._next_prune = now + self.period
        stale = [k for k, b in self._buckets.items() if now - b.updated >= self.period]
        for key in stale:
            del self._buckets[key]


class ApiRateLimits:
    """The limits of the HTTP API: one for ordinary keys, optionally one for admin keys."""

    def __init__(self, *, limit: int, admin_limit: int | None) -> None:
        self.keys = RateLimiter(limit) if limit > 0 else None
        self.admin_keys = RateLimiter(admin_limit) if admin_limit else None

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiRateLimits:
        return cls(limit=settings.rate_limit, admin_limit=settings.admin_rate_limit)

    def check(self, caller: Principal, now: float) -> None:
        """Count one call of ``caller``; raise ``RateLimited`` if it is over the limit."""
        limiter = self.admin_keys if caller.is_admin else self.keys
        if limiter is None:
            return
        wait = limiter.acquire(caller.key_id, now)
        if wait <= 0:
            return
        retry_after = max(1, math.ceil(wait))
        setting = "BELLHOOK_ADMIN_RATE_LIMIT" if caller.is_admin else "BELLHOOK_RATE_LIMIT"
        error = RateLimited(
            f"too many requests with this API key: at most {limiter.limit} a minute "
            f"({setting}); retry in {retry_after} s",
            retry_after=retry_after,
        )
        error.details.append(
            {"limit": limiter.limit, "period": int(limiter.period), "retryAfter": retry_after}
        )
        raise error
