"""The delivery queue on a real database: claims respect per-webhook limits, leases
hide claimed deliveries, release gives unsent ones back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bellhook.config import Settings
from bellhook.runtime import open_runtime
from bellhook.store.events import NewEvent
from tests.support import admin_webhook

LEASE = timedelta(seconds=30)


async def test_claims_respect_limits_leases_and_release(
    make_settings: Callable[..., Settings],
) -> None:
    now = datetime.now(UTC)
    async with open_runtime(make_settings()) as rt:
        hooks = [await admin_webhook(rt, now, f"https://example.com/{i}") for i in range(3)]
        await rt.events.ingest(
            [NewEvent(f"e{i}", "post.created", "{}", now, None) for i in range(10)], now=now
        )
        # 30 due deliveries (10 per webhook); at most 4 per webhook, 2 already in flight
        # for the first one.
        first = await rt.deliveries.claim(
            now=now, limit=100, lease=LEASE, in_flight={hooks[0].id: 2}, per_webhook=4
        )
        per_hook = {h.id: sum(j.webhook_id == h.id for j in first) for h in hooks}
        assert per_hook == {hooks[0].id: 2, hooks[1].id: 4, hooks[2].id: 4}

        # Claimed deliveries are leased: not claimable again until the lease ends.
        again = await rt.deliveries.claim(
            now=now, limit=100, lease=LEASE, in_flight={}, per_webhook=100
        )
        assert {j.delivery_id for j in again}.isdisjoint(j.delivery_id for j in first)
        assert len(again) == 30 - len(first)

        # Released ones are due at once.
        await rt.deliveries.release(first, now=now)
        back = await rt.deliveries.claim(
            now=now, limit=100, lease=LEASE, in_flight={}, per_webhook=100
        )
        assert {j.delivery_id for j in back} == {j.delivery_id for j in first}

        # After the lease, everything claimed is due again (a crashed worker's work).
        later = await rt.deliveries.claim(
            now=now + LEASE + timedelta(seconds=1),
            limit=100,
            lease=LEASE,
            in_flight={},
            per_webhook=100,
        )
        assert len(later) == 30


async def test_a_release_leaves_alone_what_another_claim_took_over(
    make_settings: Callable[..., Settings],
) -> None:
    """A worker gives back jobs whose lease ran out while they waited; by then another
    worker may have claimed them. The release must not make those due again (they
    would be sent twice)."""
    now = datetime.now(UTC)
    async with open_runtime(make_settings()) as rt:
        await admin_webhook(rt, now)
        await rt.events.ingest(
            [NewEvent(f"e{i}", "post.created", "{}", now, None) for i in range(4)], now=now
        )
        mine = await rt.deliveries.claim(
            now=now, limit=100, lease=LEASE, in_flight={}, per_webhook=100
        )
        assert len(mine) == 4
        # The lease runs out; another worker claims two of them.
        later = now + LEASE + timedelta(seconds=1)
        theirs = await rt.deliveries.claim(
            now=later, limit=2, lease=LEASE, in_flight={}, per_webhook=100
        )
        assert len(theirs) == 2

        await rt.deliveries.release(mine, now=later)
        again = await rt.deliveries.claim(
            now=later, limit=100, lease=LEASE, in_flight={}, per_webhook=100
        )
        # Only the two nobody else holds came back.
        taken = {j.delivery_id for j in theirs}
        assert {j.delivery_id for j in again} == {j.delivery_id for j in mine} - taken
        assert all(j.leased_until == later + LEASE for j in again)
