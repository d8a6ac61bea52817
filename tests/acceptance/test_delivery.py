"""The delivery engine end to end: a real bellhook app delivering to real HTTP receivers
(helpers in tests/support.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from bellhook import __version__
from bellhook.domain.catalog import CATALOG
from tests.support import (
    SECRET,
    Deliver,
    Hit,
    Receiver,
    Start,
    create_webhook,
    deliveries,
    delivery_of,
    error_of,
    eventually,
    fail_first,
    hang,
    ok,
    ok_data,
    parse_ts,
    publish,
    settled,
    signature_ok,
    status,
)

# --- the request -------------------------------------------------------------------------


async def test_success_is_one_signed_post_with_every_header(
    delivering: Deliver, receivers: Start
) -> None:
    rx = await receivers()
    env = await delivering()
    hook = await create_webhook(env.api, rx.url())
    data = {"id": "post_42", "content": "Héllo <world> & \u2028", "n": 3, "nested": {"a": [1, 2.5]}}
    accepted = await publish(
        env.api, data=data, id="evt_success_1", timestamp="2024-05-01T12:00:00Z"
    )
    assert accepted == {"id": "evt_success_1", "deliveries": 1, "duplicate": False}

    (hit,) = await rx.wait_for_count(1)
    assert hit.path == "/hook"
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["User-Agent"] == f"Bellhook/{__version__}"
    assert hit.headers["Accept-Encoding"] == "identity"  # excerpts are kept as sent
    assert hit.headers["X-Webhook-Event"] == "post.created"
    assert hit.headers["X-Webhook-Id"] == "evt_success_1"
    assert hit.headers["X-Webhook-Attempt"] == "1"
    # The signature is over the exact bytes received, with the webhook's secret.
    expected = hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hit.headers["X-Webhook-Signature"] == expected
    assert not signature_ok(hit, secret=SECRET + "x")

    body = hit.json()
    assert list(body) == ["id", "event", "timestamp", "data", "signature"]
    assert body["id"] == "evt_success_1"
    assert body["event"] == "post.created"
    assert parse_ts(body["timestamp"]) == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert body["data"] == data
    # The payload's own signature signs the payload without that member, as
    # JSON.stringify writes it.
    unsigned = json.dumps(
        {k: body[k] for k in ("id", "event", "timestamp", "data")},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert body["signature"] == hmac.new(SECRET.encode(), unsigned, hashlib.sha256).hexdigest()

    detail = await settled(env.api, hook["id"], "evt_success_1", "succeeded")
    assert detail["event"] == "post.created"
    assert detail["attemptCount"] == 1
    assert detail["lastStatusCode"] == 200
    assert detail["lastError"] is None
    assert detail["nextAttemptAt"] is None
    assert detail["test"] is False
    (attempt,) = detail["attempts"]
    assert attempt["number"] == 1
    assert attempt["manual"] is False
    assert attempt["statusCode"] == 200
    assert attempt["error"] is None
    assert attempt["errorMessage"] is None
    assert attempt["responseBody"] == "ok"
    assert isinstance(attempt["latencyMs"], int | float) and attempt["latencyMs"] >= 0
    assert abs(parse_ts(attempt["startedAt"]) - datetime.now(UTC)) < timedelta(minutes=5)


async def test_generated_secret_signs_too(delivering: Deliver, receivers: Start) -> None:
    rx = await receivers()
    env = await delivering()
    created = ok_data(
        await env.api.post("/api/webhooks", json={"url": rx.url(), "events": ["*"]}), 201
    )
    secret = created["secret"]
    assert secret
    await publish(env.api, "comment.created", {"id": "c1"})
    (hit,) = await rx.wait_for_count(1)
    assert hit.headers["X-Webhook-Event"] == "comment.created"
    assert signature_ok(hit, secret)


@pytest.mark.parametrize("code", [201, 202, 204, 299])
async def test_any_2xx_is_success(code: int, delivering: Deliver, receivers: Start) -> None:
    rx = await receivers(status(code))
    env = await delivering()
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]
    detail = await settled(env.api, hook["id"], event_id, "succeeded")
    assert detail["attemptCount"] == 1
    assert detail["lastStatusCode"] == code
    assert len(rx.hits) == 1


# --- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [400, 401, 404, 422, 500, 502])
async def test_other_statuses_are_retried(code: int, delivering: Deliver, receivers: Start) -> None:
    rx = await receivers(status(code))
    env = await delivering(retry_schedule="0.2")
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]
    detail = await settled(env.api, hook["id"], event_id, "failed")
    assert [a["statusCode"] for a in detail["attempts"]] == [code, code]
    assert [h.attempt for h in rx.hits] == [1, 2]
    hook_now = ok_data(await env.api.get(f"/api/webhooks/{hook['id']}"))
    assert hook_now["status"] == "active"


async def test_failures_then_success_retry_on_schedule(
    delivering: Deliver, receivers: Start
) -> None:
    schedule = (0.2, 0.4, 0.8)
    rx = await receivers(fail_first(2))
    env = await delivering(retry_schedule=",".join(map(str, schedule)))
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]

    hits = await rx.wait_for_count(3)
    assert [h.attempt for h in hits] == [1, 2, 3]
    assert {h.event_id for h in hits} == {event_id}
    assert all(signature_ok(h) for h in hits)
    for i in (0, 1):
        gap = hits[i + 1].at - hits[i].at
        assert gap >= 0.8 * schedule[i], f"attempt {i + 2} came {gap:.3f} s after the previous"

    detail = await settled(env.api, hook["id"], event_id, "succeeded")
    assert detail["attemptCount"] == 3
    assert [a["number"] for a in detail["attempts"]] == [1, 2, 3]
    assert [a["statusCode"] for a in detail["attempts"]] == [500, 500, 200]
    assert [a["error"] for a in detail["attempts"]] == ["http_status", "http_status", None]
    assert [a["manual"] for a in detail["attempts"]] == [False, False, False]
    assert detail["attempts"][0]["responseBody"] == "not yet"
    assert len(rx.hits) == 3


async def test_exhausted_schedule_fails_with_every_attempt_logged(
    delivering: Deliver, receivers: Start
) -> None:
    rx = await receivers(status(500, b"broken"))
    env = await delivering(retry_schedule="0.2,0.4,0.8")
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]

    detail = await settled(env.api, hook["id"], event_id, "failed")
    assert detail["attemptCount"] == 4
    assert detail["nextAttemptAt"] is None
    assert detail["lastStatusCode"] == 500
    assert detail["lastError"] == "http_status"
    attempts = detail["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3, 4]
    for a in attempts:
        assert a["statusCode"] == 500
        assert a["error"] == "http_status"
        assert a["errorMessage"]
        assert a["responseBody"] == "broken"
        assert a["manual"] is False
    started = [parse_ts(a["startedAt"]) for a in attempts]
    for i, step in enumerate((0.2, 0.4, 0.8)):
        assert (started[i + 1] - started[i]).total_seconds() >= 0.8 * step, started
    # Exactly the four attempts reached the receiver, all for the same event.
    assert [h.attempt for h in rx.hits] == [1, 2, 3, 4]
    assert {h.event_id for h in rx.hits} == {event_id}
    hook_now = ok_data(await env.api.get(f"/api/webhooks/{hook['id']}"))
    assert hook_now["status"] == "active"  # auto-disable is days away by default


async def test_gone_disables_the_webhook_without_retry(
    delivering: Deliver, receivers: Start
) -> None:
    rx = await receivers(status(410, b"gone"))
    env = await delivering(retry_schedule="0.2,0.2,0.2")
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]

    disabled = await eventually(
        lambda: env.api.get(f"/api/webhooks/{hook['id']}"),
        lambda r: r.json()["data"]["status"] == "disabled",
        what="webhook disabled after 410",
    )
    assert disabled.json()["data"]["disabledReason"]
    detail = await settled(env.api, hook["id"], event_id, "failed")
    assert detail["attemptCount"] == 1
    (attempt,) = detail["attempts"]
    assert attempt["statusCode"] == 410
    assert len(rx.hits) == 1

    # A disabled webhook is not offered new events.
    assert (await publish(env.api))["deliveries"] == 0
    # Re-enabling it clears the reason and it receives again.
    rx.respond = ok
    updated = ok_data(await env.api.put(f"/api/webhooks/{hook['id']}", json={"status": "active"}))
    assert updated["status"] == "active"
    assert updated["disabledReason"] is None
    again = await publish(env.api)
    assert again["deliveries"] == 1
    await rx.wait_until(lambda hits: any(h.event_id == again["id"] for h in hits))


@pytest.mark.parametrize("code", [429, 503])
async def test_retry_after_is_honoured(code: int, delivering: Deliver, receivers: Start) -> None:
    rx = await receivers(fail_first(1, fail=status(code, headers={"Retry-After": "1"})))
    env = await delivering(retry_schedule="0.2,5")
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]

    first, second = await rx.wait_for_count(2)
    assert (first.attempt, second.attempt) == (1, 2)
    gap = second.at - first.at
    # The schedule says ~0.2 s; the receiver asked for 1 s.
    assert gap >= 0.95, f"retried {gap:.3f} s after a Retry-After: 1"
    detail = await settled(env.api, hook["id"], event_id, "succeeded")
    assert [a["statusCode"] for a in detail["attempts"]] == [code, 200]
    assert detail["attempts"][0]["error"] == "http_status"


async def test_retry_after_is_capped_at_the_next_schedule_step(
    delivering: Deliver, receivers: Start
) -> None:
    rx = await receivers(fail_first(1, fail=status(429, headers={"Retry-After": "3600"})))
    env = await delivering(retry_schedule="0.2,0.6")
    await create_webhook(env.api, rx.url())
    await publish(env.api)
    # Not an hour later: at most the following step (0.6 s). The wait bounds it.
    first, second = await rx.wait_for_count(2, timeout=15)
    assert second.attempt == 2
    assert second.at - first.at >= 0.5


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_redirects_fail_and_are_never_followed(
    code: int, delivering: Deliver, receivers: Start
) -> None:
    target = await receivers()
    rx = await receivers(status(code, headers={"Location": target.url("/elsewhere")}))
    env = await delivering(retry_schedule="0.2")
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]

    detail = await settled(env.api, hook["id"], event_id, "failed")
    assert detail["attemptCount"] == 2
    assert detail["lastError"] == "redirect"
    for a in detail["attempts"]:
        assert a["statusCode"] == code
        assert a["error"] == "redirect"
    assert len(rx.hits) == 2
    assert target.hits == []


async def test_timeout(delivering: Deliver, receivers: Start) -> None:
    rx = await receivers(hang)
    env = await delivering(retry_schedule="0.2", delivery_timeout=1.0)
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]

    detail = await settled(env.api, hook["id"], event_id, "failed", timeout=30)
    assert detail["lastError"] == "timeout"
    assert [a["error"] for a in detail["attempts"]] == ["timeout", "timeout"]
    for a in detail["attempts"]:
        assert a["statusCode"] is None
        assert a["errorMessage"]
        assert a["latencyMs"] >= 900
    assert [h.attempt for h in rx.hits] == [1, 2]


async def _drop(_rx: Receiver, request: web.Request, _hit: Hit) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()
    raise ConnectionResetError("dropped by the test receiver")


async def test_dropped_connection(delivering: Deliver, receivers: Start) -> None:
    rx = await receivers(_drop)
    env = await delivering(retry_schedule="0.2")
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]

    detail = await settled(env.api, hook["id"], event_id, "failed")
    assert [a["error"] for a in detail["attempts"]] == ["connection", "connection"]
    for a in detail["attempts"]:
        assert a["statusCode"] is None
        assert a["errorMessage"]
    assert len(rx.hits) == 2


async def test_huge_response_body_is_a_success_with_an_excerpt(
    delivering: Deliver, receivers: Start
) -> None:
    rx = await receivers(status(200, b"x" * (1024 * 1024)))
    env = await delivering()
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]

    detail = await settled(env.api, hook["id"], event_id, "succeeded")
    (attempt,) = detail["attempts"]
    assert attempt["statusCode"] == 200
    assert attempt["error"] is None
    excerpt = attempt["responseBody"]
    assert 0 < len(excerpt) <= 4096
    assert set(excerpt) == {"x"}
    assert len(rx.hits) == 1


# --- manual retry, recover, test ----------------------------------------------------------


async def test_manual_retry_sends_now_without_consuming_the_schedule(
    delivering: Deliver, receivers: Start
) -> None:
    rx = await receivers(status(500, b"down"))
    env = await delivering(retry_schedule="3600")  # the one scheduled retry is an hour away
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]
    await rx.wait_for_count(1)
    pending = await eventually(
        lambda: delivery_of(env.api, hook["id"], event_id),
        lambda d: d["attemptCount"] == 1,
        what="first attempt logged",
    )
    assert pending["status"] == "pending"
    next_at = pending["nextAttemptAt"]
    assert parse_ts(next_at) > datetime.now(UTC) + timedelta(minutes=30)
    retry_url = f"/api/webhooks/{hook['id']}/deliveries/{pending['id']}/retry"

    # A failed manual attempt is logged but leaves the schedule alone.
    outcome = ok_data(await env.api.post(retry_url))
    assert outcome["success"] is False
    assert outcome["statusCode"] == 500
    assert outcome["error"] == "http_status"
    assert outcome["deliveryId"] == pending["id"]
    assert outcome["eventId"] == event_id
    assert len(rx.hits) == 2  # sent before the answer
    assert rx.hits[1].attempt == 2
    assert rx.hits[1].event_id == event_id
    assert signature_ok(rx.hits[1])
    after = await delivery_of(env.api, hook["id"], event_id)
    assert after["status"] == "pending"
    assert after["nextAttemptAt"] == next_at
    assert after["attemptCount"] == 2
    assert [a["manual"] for a in after["attempts"]] == [False, True]

    # A successful one finishes the delivery.
    rx.respond = ok
    outcome = ok_data(await env.api.post(retry_url))
    assert outcome["success"] is True
    assert outcome["statusCode"] == 200
    assert outcome["error"] is None
    assert outcome["latencyMs"] >= 0
    done = await delivery_of(env.api, hook["id"], event_id)
    assert done["status"] == "succeeded"
    assert done["nextAttemptAt"] is None
    assert [a["manual"] for a in done["attempts"]] == [False, True, True]
    assert [a["number"] for a in done["attempts"]] == [1, 2, 3]
    assert [h.attempt for h in rx.hits] == [1, 2, 3]


async def test_manual_retry_of_a_failed_delivery(delivering: Deliver, receivers: Start) -> None:
    rx = await receivers(status(500))
    env = await delivering(retry_schedule="0.2")
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]
    failed = await settled(env.api, hook["id"], event_id, "failed")

    rx.respond = ok
    url = f"/api/webhooks/{hook['id']}/deliveries/{failed['id']}/retry"
    assert ok_data(await env.api.post(url))["success"] is True
    done = await delivery_of(env.api, hook["id"], event_id)
    assert done["status"] == "succeeded"
    assert done["attempts"][-1]["manual"] is True
    assert len(rx.hits) == 3

    missing = await env.api.post(f"/api/webhooks/{hook['id']}/deliveries/dlv_nope/retry")
    error_of(missing, 404)
    error_of(await env.api.get(f"/api/webhooks/{hook['id']}/deliveries/dlv_nope"), 404)


async def test_recover_resends_failed_deliveries_since(
    delivering: Deliver, receivers: Start
) -> None:
    rx = await receivers()
    env = await delivering(retry_schedule="0.2")
    hook = await create_webhook(env.api, rx.url())
    since = datetime.now(UTC) - timedelta(seconds=1)

    delivered = (await publish(env.api, data={"n": 0}))["id"]
    await settled(env.api, hook["id"], delivered, "succeeded")
    rx.respond = status(500)
    lost = [(await publish(env.api, data={"n": n}))["id"] for n in (1, 2)]
    for event_id in lost:
        await settled(env.api, hook["id"], event_id, "failed")
    assert len(rx.hits) == 1 + 2 * 2

    recover_url = f"/api/webhooks/{hook['id']}/recover"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert ok_data(await env.api.post(recover_url, json={"since": future})) == {"resent": 0}

    rx.respond = ok
    assert ok_data(await env.api.post(recover_url, json={"since": since.isoformat()})) == {
        "resent": 2
    }
    await rx.wait_until(
        lambda hits: all(len([h for h in hits if h.event_id == e]) == 3 for e in lost),
        what="both failed events again",
    )
    for event_id in lost:
        detail = await settled(env.api, hook["id"], event_id, "succeeded")
        assert detail["attempts"][-1]["statusCode"] == 200
        assert all(signature_ok(h) for h in rx.of(event_id))
    assert len(rx.of(delivered)) == 1  # the delivered one was not sent again

    error_of(await env.api.post(recover_url, json={}), 422)
    error_of(await env.api.post(recover_url, json={"since": "yesterday"}), 422)


async def test_test_endpoint_sends_a_signed_sample_at_once(
    delivering: Deliver, receivers: Start
) -> None:
    rx = await receivers()
    env = await delivering(worker=False)  # no dispatcher: the API itself sends it
    hook = await create_webhook(env.api, rx.url(), events=["post.created", "comment.created"])

    outcome = ok_data(
        await env.api.post(f"/api/webhooks/{hook['id']}/test", json={"event": "comment.created"})
    )
    assert outcome["success"] is True
    assert outcome["statusCode"] == 200
    assert outcome["error"] is None
    assert outcome["latencyMs"] >= 0
    (hit,) = rx.hits  # already there when the API answered
    assert signature_ok(hit)
    assert hit.headers["X-Webhook-Event"] == "comment.created"
    assert hit.headers["X-Webhook-Id"] == outcome["eventId"]
    assert hit.headers["X-Webhook-Attempt"] == "1"
    body = hit.json()
    assert body["event"] == "comment.created"
    assert body["data"] == dict(CATALOG["comment.created"].example)

    (logged,) = await deliveries(env.api, hook["id"])
    assert logged["id"] == outcome["deliveryId"]
    assert logged["test"] is True
    assert logged["status"] == "succeeded"
    assert logged["event"] == "comment.created"

    # Without a body: post.created. A failing receiver: success false, final.
    rx.respond = status(500, b"nope")
    outcome = ok_data(await env.api.post(f"/api/webhooks/{hook['id']}/test"))
    assert outcome["success"] is False
    assert outcome["statusCode"] == 500
    assert outcome["error"] == "http_status"
    assert rx.hits[-1].headers["X-Webhook-Event"] == "post.created"
    failed = ok_data(
        await env.api.get(f"/api/webhooks/{hook['id']}/deliveries/{outcome['deliveryId']}")
    )
    assert failed["status"] == "failed"
    assert failed["test"] is True
    assert failed["nextAttemptAt"] is None

    error_of(
        await env.api.post(f"/api/webhooks/{hook['id']}/test", json={"event": "post.exploded"}),
        422,
    )
    assert len(rx.hits) == 2
    error_of(await env.api.post("/api/webhooks/wh_nope/test", json={}), 404)


async def test_test_endpoint_reports_a_hanging_receiver(
    delivering: Deliver, receivers: Start
) -> None:
    rx = await receivers(hang)
    env = await delivering(worker=False, delivery_timeout=1.0)
    hook = await create_webhook(env.api, rx.url())
    outcome = ok_data(await env.api.post(f"/api/webhooks/{hook['id']}/test", json={}))
    assert outcome["success"] is False
    assert outcome["statusCode"] is None
    assert outcome["error"] == "timeout"


# --- the delivery log ----------------------------------------------------------------------


async def test_delivery_list_filters_and_pages(delivering: Deliver, receivers: Start) -> None:
    async def by_type(rx: Receiver, request: web.Request, hit: Hit) -> web.StreamResponse:
        if hit.headers["X-Webhook-Event"] == "comment.created":
            return web.Response(status=500)
        return web.Response(text="ok")

    rx = await receivers(by_type)
    env = await delivering(retry_schedule="")  # one attempt each
    hook = await create_webhook(env.api, rx.url(), events=["post.created", "comment.created"])
    posts = [(await publish(env.api, "post.created", {"n": n}))["id"] for n in range(3)]
    comments = [(await publish(env.api, "comment.created", {"n": n}))["id"] for n in range(2)]
    await rx.wait_for_count(5)
    await eventually(
        lambda: deliveries(env.api, hook["id"], status="pending"),
        lambda items: items == [],
        what="no delivery pending",
    )

    def ids(items: list[dict[str, Any]]) -> set[str]:
        return {d["eventId"] for d in items}

    everything = await deliveries(env.api, hook["id"])
    assert ids(everything) == set(posts + comments)
    created = [parse_ts(d["createdAt"]) for d in everything]
    assert created == sorted(created, reverse=True)  # newest first
    assert [d["eventId"] for d in everything] == [*reversed(comments), *reversed(posts)]
    expected_keys = {
        "id",
        "eventId",
        "event",
        "status",
        "attemptCount",
        "nextAttemptAt",
        "lastStatusCode",
        "lastError",
        "test",
        "createdAt",
        "updatedAt",
    }
    assert all(expected_keys <= set(d) for d in everything)

    assert ids(await deliveries(env.api, hook["id"], status="succeeded")) == set(posts)
    assert ids(await deliveries(env.api, hook["id"], status="failed")) == set(comments)
    assert ids(await deliveries(env.api, hook["id"], event="comment.created")) == set(comments)
    assert await deliveries(env.api, hook["id"], event="post.created", status="failed") == []
    assert await deliveries(env.api, hook["id"], event="user.registered") == []

    # Pages of two: 2 + 2 + 1, no overlap, same order as one page.
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        resp = await env.api.get(f"/api/webhooks/{hook['id']}/deliveries", params=params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages += 1
        assert len(body["data"]) == (2 if pages < 3 else 1)
        seen.extend(d["id"] for d in body["data"])
        cursor = body["pagination"]["nextCursor"]
        if not cursor:
            break
    assert pages == 3
    assert seen == [d["id"] for d in everything]

    # A filtered page is paged too.
    resp = await env.api.get(
        f"/api/webhooks/{hook['id']}/deliveries", params={"status": "succeeded", "limit": 2}
    )
    first = resp.json()
    assert len(first["data"]) == 2 and first["pagination"]["nextCursor"]
    resp = await env.api.get(
        f"/api/webhooks/{hook['id']}/deliveries",
        params={"status": "succeeded", "limit": 2, "cursor": first["pagination"]["nextCursor"]},
    )
    second = resp.json()
    assert len(second["data"]) == 1 and second["pagination"]["nextCursor"] is None
    assert ids(first["data"] + second["data"]) == set(posts)

    base = f"/api/webhooks/{hook['id']}/deliveries"
    error_of(await env.api.get(base, params={"status": "exploded"}), 422)
    error_of(await env.api.get(base, params={"event": "post.exploded"}), 422)
    error_of(await env.api.get(base, params={"limit": 0}), 422)
    error_of(await env.api.get("/api/webhooks/wh_nope/deliveries"), 404)


async def test_another_owner_cannot_read_the_log(delivering: Deliver, receivers: Start) -> None:
    rx = await receivers()
    env = await delivering()
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]
    detail = await settled(env.api, hook["id"], event_id, "succeeded")
    async with env.svc.client(await env.svc.new_key("mallory")) as other:
        base = f"/api/webhooks/{hook['id']}"
        error_of(await other.get(f"{base}/deliveries"), 404)
        error_of(await other.get(f"{base}/deliveries/{detail['id']}"), 404)
        error_of(await other.post(f"{base}/deliveries/{detail['id']}/retry"), 404)
        error_of(await other.post(f"{base}/recover", json={"since": "2020-01-01T00:00:00Z"}), 404)
        error_of(await other.post(f"{base}/test", json={}), 404)
    assert len(rx.hits) == 1


# --- auto-disable ----------------------------------------------------------------------------


async def test_auto_disable_after_only_failures_and_reenable(
    delivering: Deliver, receivers: Start
) -> None:
    rx = await receivers(status(500))
    env = await delivering(retry_schedule=",".join(["0.2"] * 20), auto_disable_after=0.5)
    hook = await create_webhook(env.api, rx.url())
    event_id = (await publish(env.api))["id"]

    disabled = await eventually(
        lambda: env.api.get(f"/api/webhooks/{hook['id']}"),
        lambda r: r.json()["data"]["status"] == "disabled",
        what="webhook auto-disabled",
    )
    assert disabled.json()["data"]["disabledReason"]
    hits = list(rx.hits)
    assert len(hits) >= 2
    # Failures spanning the period (less the few ms between an arrival and its record).
    assert hits[-1].at - hits[0].at >= 0.3
    assert (await publish(env.api))["deliveries"] == 0

    # Re-enabled, it gets the delivery that was still pending.
    rx.respond = ok
    updated = ok_data(await env.api.put(f"/api/webhooks/{hook['id']}", json={"status": "active"}))
    assert updated["status"] == "active"
    assert updated["disabledReason"] is None
    await settled(env.api, hook["id"], event_id, "succeeded")
    hook_now = ok_data(await env.api.get(f"/api/webhooks/{hook['id']}"))
    assert hook_now["status"] == "active"


async def test_success_keeps_a_flaky_webhook_enabled(delivering: Deliver, receivers: Start) -> None:
    """Failures interleaved with successes are not 'only failures'."""
    rx = await receivers(fail_first(1))
    env = await delivering(retry_schedule="0.3,0.3", auto_disable_after=0.5)
    hook = await create_webhook(env.api, rx.url())
    for _ in range(3):
        event_id = (await publish(env.api))["id"]
        await settled(env.api, hook["id"], event_id, "succeeded")
    hook_now = ok_data(await env.api.get(f"/api/webhooks/{hook['id']}"))
    assert hook_now["status"] == "active"
