"""How a background loop lives through a database outage: one line when it starts,
one when it ends, and a growing pause between tries meanwhile.

The dispatcher's claims and its outcome writes each keep one ``Outage`` (the Kafka
consumer says its outage with ``kafka.paused``); a loop that fails calls ``failed()``
and sleeps what it returns, and calls ``succeeded()`` after its next success. Several
seconds of a restart thus make two log lines, not one a try.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

FIRST_PAUSE = 0.25  # seconds; doubled after each failure, up to MOST_PAUSE
MOST_PAUSE = 5.0

log = structlog.get_logger("bellhook.database")


class Outage:
    def __init__(self, component: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.component = component
        self._clock = clock
        self._since: float | None = None
        self._pause = FIRST_PAUSE

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException) -> float:
        """Note a failure; the seconds to wait before the next try."""
        if self._since is None:
            self._since = self._clock()
            log.warning(
                "database.unavailable",
                component=self.component,
                error=str(error),
                cause=cause_of(error),
                message="backing off and retrying until the database is back",
            )
        pause = self._pause
        self._pause = min(self._pause * 2, MOST_PAUSE)
        return pause

    def succeeded(self) -> None:
        if self._since is not None:
            log.info(
                "database.recovered",
                component=self.component,
                after_seconds=round(self._clock() - self._since, 1),
            )
            self._since = None
        self._pause = FIRST_PAUSE


def cause_of(error: BaseException) -> str | None:
    """What the driver said, by name and SQLSTATE: ``TooManyConnectionsError (53300)``.
    Never its message, which may quote a statement's values."""
    cause = error.__cause__
    if cause is None:
        return None
    cause = getattr(cause, "orig", None) or cause  # SQLAlchemy's wrapper: the driver's error
    cause = getattr(cause, "__cause__", None) or cause  # SQLAlchemy's asyncpg adapter
    sqlstate = getattr(cause, "sqlstate", None)
    return f"{type(cause).__name__} ({sqlstate})" if sqlstate else type(cause).__name__
