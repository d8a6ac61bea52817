"""Direct handoff: events published to a delivering ``serve`` go straight from ingest
to its dispatcher, already leased to it, without waiting for a claim.

A spy on the repository's ``claim`` records which deliveries went through the queue;
everything else is real (uvicorn on loopback, SQLite/PostgreSQL, aiohttp receivers).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from bellhook.delivery.dispatcher import CLAIM_AHEAD
from bellhook.store.deliveries import Job
from tests.support import (
    Deliver,
    Hit,
    Receiver,
    Start,
    create_webhook,
    deliveries,
    eventually,
    fail_first,
    publish,
    publish_batch,
    settled,
)


def spy_on_claims(svc: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Event ids of the deliveries every later claim returns."""
    repository = svc.runtime.deliveries
    claimed: list[str] = []
    real_claim = repository.claim

    async def claim(**kwargs: Any) -> list[Job]:
        jobs: list[Job] = await real_claim(**kwargs)
        claimed.extend(job.event_id for job in jobs)
        return jobs

    monkeypatch.setattr(repository, "claim", claim)
    return claimed


async def test_a_fresh_delivery_is_sent_without_a_claim(
    delivering: Deliver, receivers: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    rx = await receivers()
    env = await delivering()
    claimed = spy_on_claims(env.svc, monkeypatch)
    hook = await create_webhook(env.api, rx.url())

    accepted = await publish(env.api, id="evt_handoff_1")
    assert accepted["deliveries"] == 1
    (hit,) = await rx.wait_for_count(1)
    assert hit.event_id == "evt_handoff_1"
    detail = await settled(env.api, hook["id"], "evt_handoff_1", "succeeded")
    assert [a["statusCode"] for a in detail["attempts"]] == [200]
    assert "evt_handoff_1" not in claimed


async def test_deliveries_beyond_the_dispatchers_room_go_through_the_queue(
    delivering: Deliver, receivers: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one slot per webhook, ingest can hand over CLAIM_AHEAD deliveries (the one in
    flight and those queued behind it); the rest wait in the queue, and are all
    delivered once."""
    rx = await receivers()
    env = await delivering(per_webhook_concurrency=1)
    claimed = spy_on_claims(env.svc, monkeypatch)
    hook = await create_webhook(env.api, rx.url())
    ids = [f"evt_room_{i}" for i in range(10)]
    await publish_batch(env.api, ids)  # asserts all 10 accepted

    hits = await rx.wait_for_count(10)
    assert sorted(h.event_id for h in hits) == sorted(ids)  # each once
    await eventually(
        lambda: deliveries(env.api, hook["id"], status="succeeded"),
        lambda items: len(items) == 10,
        what="10 succeeded deliveries",
    )
    assert sorted(claimed) == sorted(ids[CLAIM_AHEAD:])


async def test_a_handed_over_delivery_that_fails_is_retried_from_the_queue(
    delivering: Deliver, receivers: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    rx = await receivers(fail_first(1))
    env = await delivering()
    claimed = spy_on_claims(env.svc, monkeypatch)
    hook = await create_webhook(env.api, rx.url())
    await publish(env.api, id="evt_handoff_retry")
    detail = await settled(env.api, hook["id"], "evt_handoff_retry", "succeeded")
    assert [a["statusCode"] for a in detail["attempts"]] == [500, 200]
    assert claimed == ["evt_handoff_retry"]  # the retry, not the first attempt


async def test_a_queued_delivery_whose_lease_would_run_out_goes_back_to_the_queue(
    delivering: Deliver, receivers: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow receiver (1.2 s an answer, one at a time, 2 s timeout, so a 9 s lease): the
    third delivery queued behind it would start 2.4 s after its lease began, too late to
    be sure to finish within it (it must start with timeout + 5 s of lease left), so it
    is given back and claimed afresh rather than sent on a lease another worker may take
    over. Every event still arrives exactly once.

    The events are published in one batch, so that their leases begin together: published
    one by one on a slow host, the third one's lease began late enough for it to be sent."""

    async def slow(rx: Receiver, request: web.Request, hit: Hit) -> web.StreamResponse:
        await asyncio.sleep(1.2)  # the receiver's own pace, not a wait of the test
        return web.Response(text="ok")

    rx = await receivers(slow)
    env = await delivering(per_webhook_concurrency=1, delivery_timeout=2.0)
    claimed = spy_on_claims(env.svc, monkeypatch)
    hook = await create_webhook(env.api, rx.url())
    ids = [f"evt_lease_{i}" for i in range(CLAIM_AHEAD)]
    await publish_batch(env.api, ids)

    hits = await rx.wait_for_count(CLAIM_AHEAD, timeout=30)
    assert sorted(h.event_id for h in hits) == sorted(ids)
    logged = await eventually(
        lambda: deliveries(env.api, hook["id"], status="succeeded"),
        lambda items: len(items) == CLAIM_AHEAD,
        what="every delivery logged as succeeded",
    )
    assert all(d["attemptCount"] == 1 for d in logged)  # none sent twice
    assert len(rx.hits) == CLAIM_AHEAD
    # The first two were sent from the handoff; the later ones came back via a claim.
    assert ids[0] not in claimed and ids[1] not in claimed
    assert set(ids[2:]) <= set(claimed)
