"""The claim window grows for a webhook whose sending outpaces its claims.

Each claim takes up to a webhook's window (CLAIM_AHEAD rounds of its slots at first).
When a webhook's queue runs dry while the database still holds its deliveries, the
claim came too late: its window doubles, up to MAX_AHEAD rounds. Here the claims are
held back on purpose (a gate on the repository's ``claim``, released once the
dispatcher has finished every delivery it held), so every queue runs dry; everything
else is real (uvicorn on loopback, SQLite/PostgreSQL, an aiohttp receiver).

A webhook that slows down with a grown window goes back to the first one, and gives
back what it holds beyond it before those deliveries' leases run short.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from aiohttp import web

from bellhook.delivery.dispatcher import CLAIM_AHEAD, MAX_AHEAD
from bellhook.store.deliveries import Job
from tests.support import (
    WAIT,
    Deliver,
    Hit,
    Receiver,
    Start,
    create_webhook,
    deliveries,
    eventually,
    publish_batch,
)

EVENTS = 300


class LateClaims:
    """Holds each claim back until the dispatcher has finished ``n`` deliveries, then
    lets it run as a claim started at that moment would: with the slots taken as they
    are then, not as they were when the claim loop woke.

    Waiting for the receiver is not enough: it has a request before the dispatcher has
    its answer, and on Python 3.12 (which starts aiohttp's write at once) the claim loop
    can wake while the last delivery is in flight. Its view of the slots would then be
    older than the dry queue the test means to show.
    """

    def __init__(self, dispatcher: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        assert dispatcher is not None, "the service's dispatcher is not running"
        self.dispatcher = dispatcher
        self.finished = 0
        self._moved = asyncio.Event()
        real_finished = dispatcher._finished

        def finished(job: Job, *, recorded: bool) -> bool:
            was_full: bool = real_finished(job, recorded=recorded)
            self.finished += 1
            self._moved.set()
            return was_full

        monkeypatch.setattr(dispatcher, "_finished", finished)

    async def until_finished(self, n: int, kwargs: dict[str, Any]) -> None:
        while self.finished < n:
            self._moved.clear()
            await asyncio.wait_for(self._moved.wait(), WAIT)
        kwargs["in_flight"] = self.dispatcher._occupied()


async def test_a_webhook_that_outpaces_its_claims_gets_larger_ones(
    delivering: Deliver, receivers: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    rx = await receivers()
    env = await delivering(per_webhook_concurrency=1)  # a window of CLAIM_AHEAD at first
    repository = env.svc.runtime.deliveries
    real_claim = repository.claim
    late = LateClaims(env.svc.runtime.events.handoff, monkeypatch)
    sizes: list[int] = []

    async def late_claim(**kwargs: Any) -> list[Job]:
        # Ingest hands CLAIM_AHEAD over directly; the claims bring the rest. Each waits
        # until all of those have been sent: the dispatcher's queue has run dry.
        await late.until_finished(CLAIM_AHEAD + sum(sizes), kwargs)
        jobs: list[Job] = await real_claim(**kwargs)
        if jobs:
            sizes.append(len(jobs))
        return jobs

    monkeypatch.setattr(repository, "claim", late_claim)
    hook = await create_webhook(env.api, rx.url())
    ids = [f"evt_window_{i}" for i in range(EVENTS)]
    await publish_batch(env.api, ids)

    hits = await rx.wait_for_count(EVENTS)
    assert sorted(h.event_id for h in hits) == sorted(ids)  # each once
    await eventually(
        lambda: deliveries(env.api, hook["id"], status="succeeded"),
        lambda items: len(items) == EVENTS,
        what="every delivery logged as succeeded",
    )
    assert sum(sizes) == EVENTS - CLAIM_AHEAD
    # It grew (a claim larger than the first window), and not past MAX_AHEAD rounds.
    assert max(sizes) > CLAIM_AHEAD, sizes
    assert max(sizes) <= MAX_AHEAD * 1, sizes  # rounds of 1 slot
    # Doubling: from the first window to MAX_AHEAD's in a few claims, not hundreds.
    assert len(sizes) <= 12, sizes


async def test_a_grown_window_shrinks_when_its_webhook_slows_down(
    delivering: Deliver, receivers: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grown as above, then the receiver takes 0.1 s an answer (one slot, 2 s timeout:
    a job must start within 2 s of its claim). 30 queued jobs would take 3 s: without
    the shrink, the last ones' leases run short, they are given back and the webhook
    is claimed SLOW_AHEAD rounds ahead for good. With it, once a job has waited 1 s,
    the window goes back to CLAIM_AHEAD and the jobs still queued go back to the queue,
    to be claimed again with fresh leases."""
    slow = asyncio.Event()
    after: list[int] = []  # claims once the window went back

    async def slowing(rx: Receiver, request: web.Request, hit: Hit) -> web.StreamResponse:
        if slow.is_set():
            await asyncio.sleep(0.1)  # the receiver's own pace, not a wait of the test
        return web.Response(text="ok")

    rx = await receivers(slowing)
    env = await delivering(per_webhook_concurrency=1, delivery_timeout=2.0)
    repository = env.svc.runtime.deliveries
    real_claim = repository.claim
    late = LateClaims(env.svc.runtime.events.handoff, monkeypatch)
    sizes: list[int] = []

    async def claim(**kwargs: Any) -> list[Job]:
        if not slow.is_set():  # held back until the queue ran dry, as above
            await late.until_finished(CLAIM_AHEAD + sum(sizes), kwargs)
        shrunk = any(entry["event"] == "webhook.slowed" for entry in logs)
        jobs: list[Job] = await real_claim(**kwargs)
        if jobs and shrunk:
            after.append(len(jobs))
        elif jobs and not slow.is_set():
            sizes.append(len(jobs))
            if len(jobs) >= 4 * CLAIM_AHEAD:
                slow.set()  # from the next request on
        return jobs

    with structlog.testing.capture_logs() as logs:  # claim() reads them as they come
        monkeypatch.setattr(repository, "claim", claim)
        hook = await create_webhook(env.api, rx.url())
        ids = [f"evt_slowing_{i}" for i in range(120)]
        await publish_batch(env.api, ids)
        hits = await rx.wait_for_count(len(ids), timeout=60)
    assert sorted(h.event_id for h in hits) == sorted(ids)  # each once
    logged = await eventually(
        lambda: deliveries(env.api, hook["id"], status="succeeded"),
        lambda items: len(items) == len(ids),
        what="every delivery logged as succeeded",
    )
    assert all(d["attemptCount"] == 1 for d in logged)  # none sent twice
    assert slow.is_set(), sizes
    assert "webhook.slowed" in [entry["event"] for entry in logs]
    # Given back before their leases ran short: the webhook was not marked slow.
    assert "lease_expiring" not in [entry.get("reason") for entry in logs], logs
    # Claimed again, at the first window (one slot: CLAIM_AHEAD deliveries at most).
    assert after and max(after) <= CLAIM_AHEAD, after
