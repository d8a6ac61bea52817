"""Outage: one line when the database goes, one when it is back, growing pauses between."""

from __future__ import annotations

import structlog

from bellhook.errors import StorageUnavailable
from bellhook.store.outage import MOST_PAUSE, Outage, cause_of


class TooManyConnectionsError(Exception):
    sqlstate = "53300"


def unavailable(cause: BaseException | None = None) -> StorageUnavailable:
    error = StorageUnavailable("the database is unavailable, try again shortly")
    error.__cause__ = cause
    return error


def test_an_outage_is_said_once_with_its_cause_and_its_end_once() -> None:
    now = [100.0]
    outage = Outage("dispatcher.claims", clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        pauses = []
        for _ in range(8):
            pauses.append(outage.failed(unavailable(TooManyConnectionsError("secret values"))))
            now[0] += 1
        assert outage.ongoing
        outage.succeeded()
        outage.succeeded()  # no outage: nothing said
    assert [e["event"] for e in logs] == ["database.unavailable", "database.recovered"]
    assert logs[0]["cause"] == "TooManyConnectionsError (53300)"
    assert "secret values" not in repr(logs)  # a driver's message may quote values
    assert logs[1]["after_seconds"] == 8.0
    assert pauses == sorted(pauses) and pauses[0] < pauses[1] and pauses[-1] == MOST_PAUSE
    assert not outage.ongoing
    assert outage.failed(unavailable()) == pauses[0]  # a new outage starts from the first pause


def test_the_cause_is_the_drivers_error_under_sqlalchemys_wrapper() -> None:
    class Wrapper(Exception):
        def __init__(self, orig: BaseException) -> None:
            self.orig = orig

    assert cause_of(unavailable(Wrapper(ConnectionRefusedError()))) == "ConnectionRefusedError"
    assert cause_of(unavailable()) is None
