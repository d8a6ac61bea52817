"""POST /api/events/batch: many events in one call, per-event errors, idempotent per id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import Service


async def test_batch_accepts_valid_events_and_reports_bad_ones(
    serve: Callable[..., Any],
) -> None:
    svc: Service = await serve()
    admin = await svc.new_key("ops", admin=True)
    async with svc.client(admin) as client:
        hook = await client.post(
            "/api/webhooks", json={"url": "https://example.com/h", "events": ["*"]}
        )
        assert hook.status_code == 201
        events: list[Any] = [
            {"event": "post.created", "data": {"n": i}, "id": f"b-{i}"} for i in range(5)
        ]
        events.insert(2, {"event": "nope.created", "data": {}})
        events.insert(4, {"event": "post.created", "data": [1, 2]})
        events.append({"event": "post.created", "data": {"big": 2**60}})
        events.append({"event": "post.created", "data": {"n": 0}, "id": "b-0"})
        response = await client.post("/api/events/batch", json={"events": events})
        assert response.status_code == 202, response.text
        body = response.json()["data"]
        assert body["accepted"] == 6
        assert body["rejected"] == 3
        results = body["results"]
        assert len(results) == len(events)
        assert results[2]["error"]["code"] == "unknown_event_type"
        assert "post.created" in results[2]["error"]["message"]
        assert results[4]["error"]["code"] == "validation_error"
        assert results[4]["error"]["details"][0]["field"] == "data"
        assert "string" in results[7]["error"]["message"]
        assert results[0] == {"id": "b-0", "deliveries": 1, "duplicate": False, "error": None}
        assert results[8] == {"id": "b-0", "deliveries": 1, "duplicate": True, "error": None}

        again = (await client.post("/api/events/batch", json={"events": events[:2]})).json()
        assert [r["duplicate"] for r in again["data"]["results"]] == [True, True]

        webhook_id = hook.json()["data"]["id"]
        log = await client.get(f"/api/webhooks/{webhook_id}/deliveries", params={"limit": 50})
        # Newest first: a batch's deliveries are made in one go, in the events' order.
        assert [d["eventId"] for d in log.json()["data"]] == [f"b-{i}" for i in range(4, -1, -1)]


async def test_batch_limits_and_permissions(serve: Callable[..., Any]) -> None:
    svc: Service = await serve()
    admin = await svc.new_key("ops", admin=True)
    user = await svc.new_key("acme")
    async with svc.client(user) as client:
        refused = await client.post(
            "/api/events/batch", json={"events": [{"event": "post.created", "data": {}}]}
        )
        assert refused.status_code == 403
        assert refused.json()["success"] is False
    async with svc.client(admin) as client:
        too_many = await client.post(
            "/api/events/batch",
            json={"events": [{"event": "post.created", "data": {}}] * 1001},
        )
        assert too_many.status_code == 422
        assert too_many.json()["error"]["details"][0]["field"] == "events"
        empty = await client.post("/api/events/batch", json={"events": []})
        assert empty.status_code == 422
        # Up to 16 MiB are accepted on this route (1 MiB elsewhere).
        big = [{"event": "post.created", "data": {"text": "x" * 2000}} for _ in range(1000)]
        ok = await client.post("/api/events/batch", json={"events": big})
        assert ok.status_code == 202
        assert ok.json()["data"]["accepted"] == 1000


async def test_an_item_that_is_not_an_object_is_refused_alone(serve: Callable[..., Any]) -> None:
    svc: Service = await serve()
    async with svc.client(await svc.new_key("ops", admin=True)) as client:
        response = await client.post(
            "/api/events/batch",
            json={"events": [1, {"event": "post.created", "data": {}, "id": "alone-ok"}]},
        )
        assert response.status_code == 202, response.text
        body = response.json()["data"]
        assert (body["accepted"], body["rejected"]) == (1, 1)
        assert body["results"][0]["error"]["code"] == "validation_error"
        assert body["results"][1]["id"] == "alone-ok"
