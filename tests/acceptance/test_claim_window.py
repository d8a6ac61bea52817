"""The claim window grows for a webhook whose sending outpaces its claims.

Each claim takes up to a webhook's window (CLAIM_AHEAD rounds of its slots at first).
When a webhook's queue runs dry while the database still holds its deliveries, the
claim came too late: its window doubles, up to MAX_AHEAD rounds. Here the claims are
held back on purpose (a gate on the repository's ``claim``, released once the
receiver has every delivery the dispatcher held), so every queue runs dry; everything
else is real (uvicorn on loopback, SQLite/PostgreSQL, an aiohttp receiver).
"""

from __future__ import annotations

from typing import Any

import pytest

from bellhook.delivery.dispatcher import CLAIM_AHEAD, MAX_AHEAD
from bellhook.store.deliveries import Job
from tests.support import Deliver, Start, create_webhook, deliveries, eventually, ok_data

EVENTS = 300


async def test_a_webhook_that_outpaces_its_claims_gets_larger_ones(
    delivering: Deliver, receivers: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    rx = await receivers()
    env = await delivering(per_webhook_concurrency=1)  # a window of CLAIM_AHEAD at first
    repository = env.svc.runtime.deliveries
    real_claim = repository.claim
    sizes: list[int] = []

    async def late_claim(**kwargs: Any) -> list[Job]:
        # Ingest hands CLAIM_AHEAD over directly; the claims bring the rest. Each waits
        # until all of those have arrived: the dispatcher's queue has run dry.
        await rx.wait_for_count(CLAIM_AHEAD + sum(sizes))
        jobs: list[Job] = await real_claim(**kwargs)
        if jobs:
            sizes.append(len(jobs))
        return jobs

    monkeypatch.setattr(repository, "claim", late_claim)
    hook = await create_webhook(env.api, rx.url())
    ids = [f"evt_window_{i}" for i in range(EVENTS)]
    batch = ok_data(
        await env.api.post(
            "/api/events/batch",
            json={"events": [{"id": i, "event": "post.created", "data": {}} for i in ids]},
        ),
        202,
    )
    assert batch["accepted"] == EVENTS

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
