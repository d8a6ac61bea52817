"""The dispatcher's use of claim windows, on its own bookkeeping (no I/O is reached):
when a window grows, and when it goes back to the start.

A white-box test of decisions that the acceptance tests cannot force reliably: a claim
bounded by the dispatcher's own window, and a webhook that leaves the backlog in a
claim cut short.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from bellhook.config import Settings
from bellhook.delivery.dispatcher import CLAIM_AHEAD, Dispatcher
from bellhook.domain.models import WebhookSecrets
from bellhook.observability.tracing import Tracing
from bellhook.store.deliveries import Job

PER_WEBHOOK = 2
START = CLAIM_AHEAD * PER_WEBHOOK
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def dispatcher() -> Dispatcher:
    settings = Settings(database_url="sqlite:///unused.db", per_webhook_concurrency=PER_WEBHOOK)
    runtime: Any = SimpleNamespace(
        settings=settings, work_available=asyncio.Event(), clock=lambda: NOW, tracing=Tracing()
    )
    return Dispatcher(runtime, sender=None)  # type: ignore[arg-type]


def job(webhook_id: str, n: int = 0) -> Job:
    return Job(
        f"dlv_{webhook_id}_{n}", webhook_id, "https://example.com/hook",
        WebhookSecrets("whsec_test"), f"evt_{n}", "post.created", "{}", "2024-01-01T00:00:00.000Z",
        0, 0, False,
    )  # fmt: skip


def finish_dry(d: Dispatcher, webhook_id: str) -> None:
    """One of ``webhook_id``'s deliveries ends, its queue empty, the database holding more."""
    done = job(webhook_id)
    d._backlogged.add(webhook_id)
    d._held[webhook_id] += 1
    d._held_total += 1
    d._in_flight[webhook_id] += 1
    d._in_flight_total += 1
    d._active.add(done.delivery_id)
    d._finished(done, recorded=True)


def test_a_dry_queue_grows_the_window_once_per_claim() -> None:
    d = dispatcher()
    finish_dry(d, "wh_a")
    assert d._window_of("wh_a") == 2 * START
    finish_dry(d, "wh_a")  # the same claim was late: once
    assert d._window_of("wh_a") == 2 * START
    d._windows.claim_started()
    finish_dry(d, "wh_a")
    assert d._window_of("wh_a") == 4 * START
    assert d._window_of("wh_b") == START


def test_no_growth_when_the_dispatchers_own_window_bounded_the_claim() -> None:
    d = dispatcher()
    d._window_bound = True
    finish_dry(d, "wh_a")
    assert d._window_of("wh_a") == START
    d._window_bound = False
    finish_dry(d, "wh_a")
    assert d._window_of("wh_a") == 2 * START


def test_no_growth_for_a_probed_or_slow_webhook() -> None:
    d = dispatcher()
    d._probing.add("wh_a")
    d._slow.add("wh_b")
    finish_dry(d, "wh_a")
    finish_dry(d, "wh_b")
    assert not d._windows.is_grown("wh_a") and not d._windows.is_grown("wh_b")


def test_a_caught_up_webhook_goes_back_to_the_start_even_after_a_cut_short_claim() -> None:
    d = dispatcher()
    finish_dry(d, "wh_a")
    assert d._windows.is_grown("wh_a")
    # A claim cut short (by the batch limit) gives it less than its room: it leaves the
    # backlog, but the claim says nothing sure of it, so its window stays...
    d._note_claim([], {}, cut_short=True)
    assert "wh_a" not in d._backlogged and d._windows.is_grown("wh_a")
    # ...until the next claim that is not cut short.
    d._note_claim([job("wh_b")], {}, cut_short=False)
    assert not d._windows.is_grown("wh_a")
    assert d._window_of("wh_a") == START


def test_a_backlogged_webhook_keeps_its_grown_window() -> None:
    d = dispatcher()
    finish_dry(d, "wh_a")
    room = d._window_of("wh_a")
    occupied = d._occupied()  # as the claim sees it: below zero, for a grown window
    assert occupied.get("wh_a", 0) == START - room
    d._note_claim([job("wh_a", i) for i in range(room)], occupied, cut_short=False)
    assert "wh_a" in d._backlogged and d._window_of("wh_a") == room
