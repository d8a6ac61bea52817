"""Kafka ingestion against a real Kafka-protocol broker (Tansu) and real receivers.

``serve`` consumes when ``BELLHOOK_KAFKA_BOOTSTRAP_SERVERS`` is set: events produced to
the topic are delivered, signed, exactly as events published over HTTP, and messages
that cannot be accepted are listed at ``GET /api/ingest/errors`` without holding up the
good ones behind them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bellhook.domain.catalog import CATALOG
from tests.broker import TEST_CLIENT_OPTIONS, Broker
from tests.support import (
    Deliver,
    Start,
    create_webhook,
    eventually,
    ok_data,
    scrape,
    signature_ok,
    value,
)

pytestmark = pytest.mark.timeout(180)
JOIN_WAIT = 90  # a group's first join (seconds), kept out of the tests' own waits


def kafka_settings(broker: Broker, topic: str, **extra: Any) -> dict[str, Any]:
    return {
        "kafka_bootstrap_servers": broker.bootstrap,
        "kafka_topics": topic,
        "kafka_group": f"g-{topic}",
        "kafka_options": TEST_CLIENT_OPTIONS,
        **extra,
    }


async def test_every_catalog_event_and_cloudevents_are_delivered_signed(
    kafka_broker: Broker, delivering: Deliver, receivers: Start
) -> None:
    topic = kafka_broker.topic()
    rx = await receivers()
    setup = await delivering(**kafka_settings(kafka_broker, topic))
    await create_webhook(setup.api, rx.url(), events=["*"])
    plain = [
        {"event": t.name, "id": f"plain-{t.name}", "data": dict(t.example), "audience": "*"}
        for t in CATALOG.values()
    ]
    cloud = [
        {
            "specversion": "1.0",
            "type": t.name,
            "id": f"ce-{t.name}",
            "source": "/bellamy/backend",
            "time": "2026-12-07T10:00:00Z",
            "datacontenttype": "application/json",
            "data": dict(t.example),
            "audience": ["ops"],
        }
        for t in CATALOG.values()
    ]
    # No id: the event's id is the message's position, so that reading it again is a
    # duplicate.
    anonymous = {"event": "post.created", "data": {"id": "p-anon"}, "audience": "*"}
    kafka_broker.produce(topic, [*plain, *cloud, anonymous])

    expected = {e["id"] for e in plain + cloud} | {f"kafka:{topic}:0:{len(plain + cloud)}"}
    hits = await rx.wait_until(lambda hs: {h.event_id for h in hs} >= expected, timeout=JOIN_WAIT)
    by_id = {h.event_id: h for h in hits}
    assert all(signature_ok(h) for h in hits)
    for t in CATALOG.values():
        for prefix in ("plain", "ce"):
            hit = by_id[f"{prefix}-{t.name}"]
            body = hit.json()
            assert body["event"] == t.name == hit.headers["X-Webhook-Event"]
            assert body["data"] == dict(t.example)
    assert by_id["ce-post.created"].json()["timestamp"] == "2026-12-07T10:00:00.000Z"
    assert len(hits) == len(expected)  # one delivery each


async def test_poison_messages_are_listed_and_never_block_the_good_ones(
    kafka_broker: Broker, delivering: Deliver, receivers: Start
) -> None:
    topic, dead_letters = kafka_broker.topic(), kafka_broker.topic()
    rx = await receivers()
    setup = await delivering(**kafka_settings(kafka_broker, topic, kafka_dlq_topic=dead_letters))
    await create_webhook(setup.api, rx.url(), events=["post.created"])

    def good(n: int) -> bytes:
        event = {"event": "post.created", "id": f"good-{n}", "data": {"n": n}, "audience": "*"}
        return json.dumps(event).encode()

    poison = {
        1: (b"{not json", "not_json"),
        3: (b"\xff\xfe\x00binary", "not_utf8"),
        5: (json.dumps({"event": "post.exploded", "data": {}}).encode(), "unknown_event_type"),
        7: (json.dumps({"event": "post.created", "data": "not an object"}).encode(),
            "validation_error"),
        # Larger than an event's data may be (256 KiB), as over HTTP.
        9: (b'{"event": "post.created", "data": {"x": "' + b"y" * 300_000 + b'"}}',
            "validation_error"),
        11: (b"[1, 2, 3]", "not_an_object"),
    }  # fmt: skip
    values = [poison[i][0] if i in poison else good(i) for i in range(13)]
    keys = [f"key-{i}".encode() for i in range(13)]
    kafka_broker.produce(topic, values, keys=keys)

    goods = {f"good-{i}" for i in range(13) if i not in poison}
    await rx.wait_until(lambda hs: {h.event_id for h in hs} >= goods, timeout=JOIN_WAIT)

    async def listed() -> list[dict[str, Any]]:
        resp = await setup.api.get("/api/ingest/errors", params={"limit": 100})
        return list(ok_data(resp))

    errors = await eventually(listed, lambda es: len(es) >= len(poison), what="dead letters")
    assert len(errors) == len(poison)
    assert {(e["offset"], e["code"]) for e in errors} == {
        (i, code) for i, (_, code) in poison.items()
    }
    assert all(e["topic"] == topic and e["partition"] == 0 for e in errors)
    assert [e["offset"] for e in errors] == sorted((e["offset"] for e in errors), reverse=True)
    first = next(e for e in errors if e["offset"] == 1)
    assert first["key"] == "key-1" and first["excerpt"] == "{not json"
    assert next(e for e in errors if e["offset"] == 3)["excerpt"].startswith("\\xff\\xfe")
    too_large = next(e for e in errors if e["offset"] == 9)
    assert "256 KiB" in too_large["reason"]
    assert len(too_large["excerpt"]) <= 1024  # bounded
    assert all(e["reason"] for e in errors)

    # Paged, newest first, for admin keys only.
    page = await setup.api.get("/api/ingest/errors", params={"limit": 2})
    body = page.json()
    assert [e["offset"] for e in body["data"]] == [11, 9]
    rest = await setup.api.get(
        "/api/ingest/errors", params={"limit": 100, "cursor": body["pagination"]["nextCursor"]}
    )
    assert [e["offset"] for e in ok_data(rest)] == [7, 5, 3, 1]
    # Each refused message is on the dead-letter topic too, as it was, with why.
    produced = kafka_broker.read(dead_letters, len(poison))
    assert [m["value"] for m in produced] == [poison[i][0] for i in sorted(poison)]
    assert [m["key"] for m in produced] == [f"key-{i}".encode() for i in sorted(poison)]
    assert [m["headers"]["bellhook-error-code"] for m in produced] == [
        poison[i][1].encode() for i in sorted(poison)
    ]
    assert produced[0]["headers"]["bellhook-source"] == f"{topic}/0/1".encode()

    async with setup.svc.client(await setup.svc.new_key("acme")) as integrator:
        refused = await integrator.get("/api/ingest/errors")
    assert refused.status_code == 403
    assert refused.json()["success"] is False

    # The metrics count the same: each good event once, each refusal by its reason;
    # the consumer's lag comes down to nothing once all is committed.
    async with setup.svc.client() as scraper:
        samples = await eventually(
            lambda: scrape(scraper),
            lambda s: (
                s.get(("bellhook_kafka_consumer_lag", (("partition", "0"), ("topic", topic)))) == 0
            ),
            timeout=60,
            what="the partition's lag measured at 0",
        )
        ready = ok_data(await scraper.get("/readyz"))
    ingested = "bellhook_events_ingested_total"
    assert value(samples, ingested, source="kafka", event_type="post.created") == len(goods)
    rejected = "bellhook_events_rejected_total"
    for reason in {code for _, code in poison.values()}:
        expected = sum(1 for _, code in poison.values() if code == reason)
        assert value(samples, rejected, source="kafka", reason=reason) == expected
    assert value(samples, "bellhook_kafka_rebalances_total", kind="assigned") >= 1
    assert value(samples, "bellhook_kafka_paused") == 0
    assert ready["checks"]["kafka"] == "ok"
