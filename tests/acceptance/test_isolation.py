"""One slow receiver must not hold back the others (the per-webhook concurrency limit).

Two admin webhooks get the same 40 events. The slow receiver blocks every request
on an asyncio.Event; it is released only after the fast receiver has all 40. If
the slow webhook's deliveries filled the dispatcher (or the fast ones queued
behind them), the fast receiver would never get all 40 and the wait would fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.support import (
    Deliver,
    Hit,
    Receiver,
    Start,
    create_webhook,
    deliveries,
    eventually,
    hang,
    publish,
    receiver_pool,
)

EVENTS = 40
PER_WEBHOOK = 2


async def test_a_hanging_receiver_does_not_delay_another(serve: Callable[..., Any]) -> None:
    async with receiver_pool() as start:
        slow = await start(hang)
        fast = await start()
        svc = await serve(
            worker=True,
            dev_mode=True,
            retry_schedule="0.2,0.4,0.8",
            delivery_timeout=30.0,  # the slow requests stay in flight for the whole test
            per_webhook_concurrency=PER_WEBHOOK,
            max_concurrency=8,
            claim_batch=8,
        )
        async with svc.client(await svc.new_key("ops", admin=True)) as api:
            slow_hook = await create_webhook(api, slow.url("/slow"))
            fast_hook = await create_webhook(api, fast.url("/fast"))
            published = []
            for n in range(EVENTS):
                accepted = await publish(api, "post.created", {"n": n})
                assert accepted["deliveries"] == 2
                published.append(accepted["id"])

            await fast.wait_until(
                lambda hits: {h.event_id for h in hits} >= set(published),
                timeout=30,
                what=f"all {EVENTS} events while the other receiver hangs",
            )
            # The slow receiver holds no more than its own slots, and is still blocked.
            await slow.wait_for_count(1)
            assert len(slow.hits) <= PER_WEBHOOK
            assert slow.in_flight == len(slow.hits)
            assert len(fast.hits) == EVENTS  # each once: no spurious retries
            fast_log = await eventually(
                lambda: deliveries(api, fast_hook["id"], status="succeeded"),
                lambda items: len(items) == EVENTS,
                what="every fast delivery logged as succeeded",
            )
            assert {d["eventId"] for d in fast_log} == set(published)

            # Released, the slow receiver gets everything too, never more than its
            # limit at once.
            slow.release.set()
            await slow.wait_until(
                lambda hits: {h.event_id for h in hits} >= set(published),
                timeout=30,
                what=f"all {EVENTS} events once released",
            )
            assert slow.max_in_flight <= PER_WEBHOOK
            assert fast.max_in_flight <= PER_WEBHOOK
            await eventually(
                lambda: deliveries(api, slow_hook["id"], status="succeeded"),
                lambda items: len(items) == EVENTS,
                what="every slow delivery logged as succeeded",
            )


async def test_a_receiver_that_stops_answering_gets_one_request_at_a_time(
    serve: Callable[..., Any],
) -> None:
    """After its requests time out, a webhook is probed with one request at a time (its
    claimed-ahead deliveries go back to the queue); once one is answered, the rest
    follow and every event arrives."""
    open_when_probed: list[int] = []

    async def hang_and_count(rx: Receiver, request: web.Request, hit: Hit) -> web.StreamResponse:
        if hit.seq >= 4 and not rx.release.is_set():
            open_when_probed.append(rx.in_flight)
        return await hang(rx, request, hit)

    async with receiver_pool() as start:
        dead = await start(hang_and_count)
        svc = await serve(
            worker=True,
            dev_mode=True,
            retry_schedule="0.2",
            delivery_timeout=1.0,
            per_webhook_concurrency=4,
            poll_interval=0.05,
        )
        async with svc.client(await svc.new_key("ops", admin=True)) as api:
            hook = await create_webhook(api, dead.url())
            published = [(await publish(api, "post.created", {"n": n}))["id"] for n in range(12)]

            await dead.wait_for_count(4)  # the first round: all four slots, all hanging
            await dead.wait_for_count(7)  # they timed out; then three probes, one by one
            # One at a time; the receiver may not have torn the timed-out request down
            # yet when the next arrives, hence 2. At full width it would be 4.
            assert max(open_when_probed) <= 2

            dead.release.set()  # answering again: the rest go out at full width
            await dead.wait_until(
                lambda hits: {h.event_id for h in hits} >= set(published),
                timeout=30,
                what="all 12 events once it answers",
            )
            settled_log = await eventually(
                lambda: deliveries(api, hook["id"], status="succeeded"),
                lambda items: len(items) == 12,
                what="every delivery logged as succeeded",
            )
            assert {d["eventId"] for d in settled_log} == set(published)


async def test_webhooks_take_turns_when_the_global_limit_binds(
    delivering: Deliver, receivers: Start
) -> None:
    """One slot for the whole dispatcher: a webhook with deliveries queued behind the one
    in flight does not keep the slot each of them frees while another webhook's delivery
    waits. With the slot freed, the other webhook goes next but one, not last."""
    gate = asyncio.Event()

    async def respond(_rx: Receiver, _request: web.Request, hit: Hit) -> web.StreamResponse:
        if hit.path == "/deep":
            await gate.wait()
        return web.Response(text="ok")

    rx = await receivers(respond)
    env = await delivering(max_concurrency=1, per_webhook_concurrency=1)
    await create_webhook(env.api, rx.url("/deep"), events=["post.created"])
    await create_webhook(env.api, rx.url("/other"), events=["comment.created"])
    deep = 7  # one in flight and six queued behind it; the claim-ahead window holds 8
    for i in range(deep):
        await publish(env.api, id=f"evt_deep_{i}")
        if i == 0:
            await rx.wait_for_count(1, path="/deep")  # the slot is taken
    await publish(env.api, event="comment.created", id="evt_other")
    gate.set()
    hits = await rx.wait_for_count(deep + 1)
    order = [h.path for h in hits]
    assert order.count("/deep") == deep
    assert order.index("/other") <= 2, order
