"""GET /api/webhooks/{id}/stats through the real API: real deliveries to a loopback
receiver (some answered 500, one retried by hand), the numbers they make, and the
owner check (helpers in tests/support.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.support import (
    Deliver,
    Hit,
    Receiver,
    Start,
    create_webhook,
    delivery_of,
    error_of,
    ok,
    ok_data,
    parse_ts,
    publish,
    settled,
    status,
)

GOOD = ["good-1", "good-2", "good-3"]
BAD = "bad-1"
WINDOW_FIELDS = {"attempts", "succeeded", "failed", "successRate", "latencyMs", "lastError"}
EMPTY_WINDOW = {
    "attempts": 0,
    "succeeded": 0,
    "failed": 0,
    "successRate": None,
    "latencyMs": {"p50": None, "p99": None},
    "lastError": None,
}
MISSING_WEBHOOK = "wh_0000000000doesnotexist000"


async def bad_events_fail(rx: Receiver, request: web.Request, hit: Hit) -> web.StreamResponse:
    failing = hit.event_id.startswith("bad-")
    return await (status(500, b"a body stats never show") if failing else ok)(rx, request, hit)


def nearest_rank(values: list[float], percentile: int) -> float:
    ordered = sorted(values)
    rank = -(-percentile * len(ordered) // 100)  # ceil(p/100 * n), 1-based
    return ordered[max(rank, 1) - 1]


async def test_stats_count_real_deliveries_and_answer_only_the_owner(
    delivering: Deliver, receivers: Start
) -> None:
    rx = await receivers(bad_events_fail)
    env = await delivering(retry_schedule="0.2")  # a failing event: two attempts, then failed
    async with (
        env.svc.client(await env.svc.new_key("alice")) as alice,
        env.svc.client(await env.svc.new_key("bob")) as bob,
    ):
        hook = await create_webhook(alice, rx.url())
        path = f"/api/webhooks/{hook['id']}/stats"
        fresh = ok_data(await alice.get(path))
        assert fresh["windows"] == {"hour": EMPTY_WINDOW, "day": EMPTY_WINDOW}

        for event_id in [*GOOD, BAD]:
            await publish(env.api, id=event_id, audience=["alice"])
        for event_id in GOOD:
            await settled(alice, hook["id"], event_id, "succeeded")
        failed = await settled(alice, hook["id"], BAD, "failed")
        # A manual retry is an attempt like the others.
        retried = ok_data(
            await alice.post(f"/api/webhooks/{hook['id']}/deliveries/{failed['id']}/retry")
        )
        assert (retried["success"], retried["statusCode"]) == (False, 500)

        logged = [
            a for e in [*GOOD, BAD] for a in (await delivery_of(alice, hook["id"], e))["attempts"]
        ]
        assert len(logged) == 6 and sum(a["manual"] for a in logged) == 1
        manual = next(a for a in logged if a["manual"])

        data = ok_data(await alice.get(path))
        assert set(data) == {"webhookId", "generatedAt", "windows"}
        assert data["webhookId"] == hook["id"]
        generated = parse_ts(data["generatedAt"])
        assert all(parse_ts(a["startedAt"]) <= generated for a in logged)
        latencies = [a["latencyMs"] for a in logged]
        expected = {
            "attempts": 6,
            "succeeded": 3,
            "failed": 3,
            "successRate": 0.5,
            "latencyMs": {"p50": nearest_rank(latencies, 50), "p99": nearest_rank(latencies, 99)},
            "lastError": {
                "startedAt": manual["startedAt"],
                "statusCode": 500,
                "error": "http_status",
                "errorMessage": "the receiver answered 500",
            },
        }
        # Everything happened within the hour: both windows saw the same attempts.
        assert data["windows"] == {"hour": expected, "day": expected}
        assert set(data["windows"]["hour"]) == WINDOW_FIELDS
        assert "a body stats never show" not in str(data)

        # Another owner: the 404 of a webhook that does not exist, as GET /{id} answers.
        theirs = error_of(await bob.get(path), 404)
        assert theirs == error_of(await bob.get(f"/api/webhooks/{hook['id']}"), 404)
        assert theirs["code"] == "not_found"
        for unknown in (MISSING_WEBHOOK, "not-an-id"):
            missing = error_of(await alice.get(f"/api/webhooks/{unknown}/stats"), 404)
            assert missing["code"] == "not_found"
        async with env.svc.client() as anonymous:
            assert error_of(await anonymous.get(path), 401)["code"]

        # Admin keys see every owner's webhook.
        as_admin: dict[str, Any] = ok_data(await env.api.get(path))
        assert as_admin["windows"] == data["windows"]
