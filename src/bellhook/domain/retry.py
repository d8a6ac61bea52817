"""When to try a failed delivery again: the schedule, jitter and Retry-After.

Pure: the caller passes the current time and a random number in [0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``schedule[n]`` is the delay after the (n+1)-th failed attempt; then it gives up."""

    schedule: tuple[float, ...]
    jitter: float = 0.2

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    def delay_after(
        self, failures: int, *, rand: float, retry_after: float | None = None
    ) -> float | None:
        """Seconds to wait after the ``failures``-th failure, or None when it is the last."""
        if failures < 1 or failures > len(self.schedule):
            return None
        base = self.schedule[failures - 1]
        delay = base * (1 + self.jitter * (2 * rand - 1))
        if retry_after is not None and retry_after > delay:
            # Honour the receiver's wish, but never beyond the step after next.
            cap = self.schedule[min(failures, len(self.schedule) - 1)]
            delay = max(delay, min(retry_after, max(cap, base)))
        return max(delay, 0.0)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - now).total_seconds(), 0.0)
