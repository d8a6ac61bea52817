"""/metrics, /readyz and the logs, after real deliveries to real receivers.

The exposition is parsed with prometheus-client's own parser; counters must have moved
by exactly what was delivered, and no label may carry a URL or an id.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bellhook.runtime import utc_now
from bellhook.store.tables import deliveries
from tests.conftest import Service
from tests.support import (
    SECRET,
    Deliver,
    Server,
    Start,
    bellhook_env,
    create_admin_key,
    create_webhook,
    eventually,
    free_port,
    ok_data,
    publish,
    receiver_pool,
    scrape,
    settled,
    status,
    total,
    value,
)


async def test_counters_move_by_exactly_what_was_delivered(
    delivering: Deliver, receivers: Start
) -> None:
    good = await receivers()
    broken = await receivers(status(500))
    gone = await receivers(status(410))
    env = await delivering(retry_schedule="0.05,0.05")
    ok_hook = await create_webhook(env.api, good.url(), events=["post.created"])
    failing = await create_webhook(env.api, broken.url(), events=["comment.created"])
    goner = await create_webhook(env.api, gone.url(), events=["reaction.added"])
    for n in range(3):
        await publish(env.api, id=f"evt_ok_{n}")
    await publish(env.api, id="evt_ok_0")  # a duplicate: no fan-out
    await publish(env.api, "comment.created", {"id": "c1", "post_id": "p1"}, id="evt_bad")
    await publish(env.api, "reaction.added", {"id": "r1"}, id="evt_gone")
    refused = await env.api.post("/api/events", json={"event": "no.such", "data": {}})
    assert refused.status_code == 422
    batch = await env.api.post(
        "/api/events/batch",
        json={"events": [{"event": "post.created", "data": {}, "id": "evt_b"}, {"data": {}}]},
    )
    assert ok_data(batch, 202)["rejected"] == 1

    for n in range(3):
        await settled(env.api, ok_hook["id"], f"evt_ok_{n}", "succeeded")
    await settled(env.api, ok_hook["id"], "evt_b", "succeeded")
    await settled(env.api, failing["id"], "evt_bad", "failed")
    await settled(env.api, goner["id"], "evt_gone", "failed")

    metrics = env.svc.client()
    s = await eventually(
        lambda: scrape(metrics),
        lambda s: total(s, "bellhook_delivery_attempts_total") == 8,
        what="8 attempts counted",
    )
    attempts = "bellhook_delivery_attempts_total"
    assert value(s, attempts, event_type="post.created", outcome="success") == 4
    assert value(s, attempts, event_type="comment.created", outcome="http_status") == 3
    assert value(s, attempts, event_type="reaction.added", outcome="http_status") == 1
    retries = "bellhook_retries_scheduled_total"
    assert value(s, retries, event_type="comment.created", error_kind="http_status") == 2
    assert total(s, retries) == 2
    failed = "bellhook_deliveries_failed_total"
    assert value(s, failed, event_type="comment.created", error_kind="http_status") == 1
    assert value(s, failed, event_type="reaction.added", error_kind="http_status") == 1
    assert value(s, "bellhook_webhooks_auto_disabled_total") == 1  # the 410
    assert value(s, "bellhook_delivery_attempt_duration_seconds_count") == 8
    assert value(s, "bellhook_delivery_attempt_duration_seconds_sum") > 0
    assert value(s, "bellhook_delivery_end_to_end_seconds_count") == 4
    ingested = "bellhook_events_ingested_total"
    assert value(s, ingested, source="http", event_type="post.created") == 3
    assert value(s, ingested, source="http", event_type="comment.created") == 1
    assert value(s, ingested, source="batch", event_type="post.created") == 1
    assert value(s, "bellhook_events_duplicate_total", source="http") == 1
    rejected = "bellhook_events_rejected_total"
    assert value(s, rejected, source="http", reason="unknown_event_type") == 1
    assert value(s, rejected, source="batch", reason="validation_error") == 1
    assert value(s, "bellhook_deliveries_pending") == 0
    assert value(s, "bellhook_deliveries_due") == 0
    assert value(s, "bellhook_oldest_due_delivery_age_seconds") == 0
    assert value(s, "bellhook_webhooks", status="active") == 2
    assert value(s, "bellhook_webhooks", status="disabled") == 1
    assert total(s, "bellhook_build_info") == 1

    # No label carries a URL, an id or a secret: the values are few and known.
    ids = {ok_hook["id"], failing["id"], goner["id"], "evt_ok_0", "evt_bad", "ops"}
    for _name, labels in s:
        for label, text in labels:
            assert "://" not in text and "/" not in text, (label, text)
            assert text not in ids and SECRET not in text, (label, text)


async def test_the_backlog_gauges_say_what_waits_and_for_how_long(
    serve: Callable[..., Any],
) -> None:
    """No dispatcher here: what is published stays due. A disabled webhook's deliveries
    are pending but not due (no worker sends them until it is enabled again)."""
    svc: Service = await serve(worker=False, dev_mode=True, metrics_refresh=0)
    async with svc.client(await svc.new_key("ops", admin=True)) as api, svc.client() as anon:
        hook = await create_webhook(api, "http://127.0.0.1:9/never-called")
        later = await create_webhook(api, "http://127.0.0.1:9/later", events=["comment.created"])
        await publish(api, id="evt_waits")
        await publish(api, "comment.created", {"id": "c1", "post_id": "p1"}, id="evt_later")
        s = await scrape(anon)
        assert value(s, "bellhook_deliveries_pending") == 2
        assert value(s, "bellhook_deliveries_due") == 2

        # The first was due a minute ago, the second is a retry an hour away.
        async with svc.runtime.db.write() as conn:
            await conn.execute(
                sa.update(deliveries)
                .where(deliveries.c.webhook_id == hook["id"])
                .values(next_attempt_at=utc_now() - timedelta(seconds=60))
            )
            await conn.execute(
                sa.update(deliveries)
                .where(deliveries.c.webhook_id == later["id"])
                .values(next_attempt_at=utc_now() + timedelta(hours=1))
            )
        s = await scrape(anon)
        assert value(s, "bellhook_deliveries_pending") == 2
        assert value(s, "bellhook_deliveries_due") == 1
        assert 60 <= value(s, "bellhook_oldest_due_delivery_age_seconds") < 3600

        ok_data(await api.patch(f"/api/webhooks/{hook['id']}", json={"status": "disabled"}))
        s = await scrape(anon)
        assert value(s, "bellhook_deliveries_pending") == 2
        assert value(s, "bellhook_deliveries_due") == 0
        assert value(s, "bellhook_oldest_due_delivery_age_seconds") == 0
        assert value(s, "bellhook_webhooks", status="disabled") == 1
        assert value(s, "bellhook_webhooks", status="active") == 1


async def test_metrics_ask_for_the_token_when_one_is_set(serve: Callable[..., Any]) -> None:
    svc: Service = await serve(metrics_token="scrape-token-1234")
    async with svc.client() as anonymous:
        resp = await anonymous.get("/metrics")
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "unauthorized"
        assert "scrape-token-1234" not in resp.text
    async with svc.client("wrong-token") as wrong:
        assert (await wrong.get("/metrics")).status_code == 401
    async with svc.client("scrape-token-1234") as scraper:
        assert total(await scrape(scraper), "bellhook_build_info") == 1


async def test_readyz_names_each_check(serve: Callable[..., Any]) -> None:
    api_only: Service = await serve(worker=False)
    async with api_only.client() as client:
        ready = ok_data(await client.get("/readyz"))
    assert ready == {
        "status": "ready",
        "checks": {
            "database": "ok",
            "migrations": "ok",
            "dispatcher": "not_configured",
            "kafka": "not_configured",
        },
    }
    delivering: Service = await serve(worker=True)
    async with delivering.client() as client:
        checks = ok_data(await client.get("/readyz"))["checks"]
    assert checks["dispatcher"] == "ok"


def json_lines(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]


async def test_a_failing_delivery_logs_its_ids_and_never_its_secret_or_payload(
    database_url: str, tmp_path: Path
) -> None:
    secret = "whsec-never-in-a-log-0123456789"
    marker = "payload-marker-8c1f"
    env = bellhook_env(
        BELLHOOK_DATABASE_URL=database_url,
        BELLHOOK_LOG_FORMAT="json",
        BELLHOOK_RETRY_SCHEDULE="0.05",
        BELLHOOK_POLL_INTERVAL="0.05",
    )
    token = await create_admin_key(env)
    server = Server(env, tmp_path / "serve.log")
    await server.start()
    try:
        async with (
            receiver_pool() as start,
            httpx.AsyncClient(
                base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}
            ) as api,
        ):
            rx = await start(status(500, b"receiver says no"))
            hook = await create_webhook(api, rx.url(), secret=secret)
            await publish(api, data={"id": "post_9", "content": marker}, id="evt_logged")
            detail = await settled(api, hook["id"], "evt_logged", "failed")
        await server.wait_for_output('"delivery.failed"')
        lines = json_lines(server)
        (retry,) = [r for r in lines if r["event"] == "delivery.retry_scheduled"]
        (failed,) = [r for r in lines if r["event"] == "delivery.failed"]
        for record, attempt in ((retry, 1), (failed, 2)):
            assert record["event_id"] == "evt_logged"
            assert record["delivery_id"] == detail["id"]
            assert record["webhook_id"] == hook["id"]
            assert record["attempt"] == attempt
            assert record["status_code"] == 500
            assert record["error_kind"] == "http_status"
        assert "next_attempt_at" in retry
        output = server.output()
        assert secret not in output
        assert marker not in output
        assert "receiver says no" not in output  # nor the receiver's answer
    finally:
        await server.stop()


async def test_worker_processes_sum_their_metrics_on_the_metrics_port(
    database_url: str, tmp_path: Path
) -> None:
    events = 30
    port = free_port()
    env = bellhook_env(
        BELLHOOK_DATABASE_URL=database_url,
        BELLHOOK_WORKER="false",
        BELLHOOK_LOG_FORMAT="json",
        BELLHOOK_PER_WEBHOOK_CONCURRENCY="8",
    )
    token = await create_admin_key(env)
    api_server = Server(env, tmp_path / "serve.log")
    worker = Server(
        env, tmp_path / "worker.log", worker=["--processes", "2", "--metrics-port", str(port)]
    )
    await api_server.start()
    await worker.start()
    await worker.wait_for_output("metrics.serving")
    try:
        async with (
            receiver_pool() as start,
            httpx.AsyncClient(
                base_url=api_server.base_url, headers={"Authorization": f"Bearer {token}"}
            ) as api,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as ops,
        ):
            rx = await start()
            await create_webhook(api, rx.url())
            for n in range(events):
                await publish(api, id=f"evt_summed_{n}")
            await rx.wait_for_count(events)
            s = await eventually(
                lambda: scrape(ops),
                lambda s: total(s, "bellhook_delivery_attempts_total") >= events,
                what=f"{events} attempts summed",
            )
            assert total(s, "bellhook_delivery_attempts_total", outcome="success") == events
            assert total(s, "bellhook_delivery_attempts_total") == events
            assert value(s, "bellhook_delivery_attempt_duration_seconds_count") == events
            assert value(s, "bellhook_webhooks", status="active") == 1
            assert total(s, "bellhook_build_info") == 1
            ready = ok_data(await ops.get("/readyz"))
            assert ready["checks"]["dispatcher"] == "ok"
            assert ok_data(await ops.get("/healthz"))["database"] == "ok"
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        assert await worker.wait() == 0
    finally:
        await worker.stop()
        await api_server.stop()


@pytest.mark.parametrize("processes", ["1", "2"])
async def test_a_metrics_port_in_use_is_a_clear_error_and_starts_nothing(
    database_url: str, processes: str
) -> None:
    import asyncio
    import socket
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = bellhook_env(BELLHOOK_DATABASE_URL=database_url)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bellhook", "worker", "--processes", processes,
            "--metrics-port", str(port),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in err.decode()
    assert "Traceback" not in err.decode()
    assert "dispatcher.started" not in err.decode() + _out.decode()  # no child ran
