"""Optional OpenTelemetry tracing end to end: a real app (tracing injected with an
in-memory exporter) delivering to real receivers on loopback."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import select

from bellhook.config import Settings
from bellhook.ingest.consumer import KafkaIngest
from bellhook.ingest.messages import Message
from bellhook.observability.tracing import DELIVER_SPAN, INGEST_SPAN, OpenTelemetryTracing
from bellhook.runtime import Runtime, open_runtime
from bellhook.store.tables import events
from tests.conftest import Service, start_service
from tests.support import (
    SECRET,
    WAIT,
    Deliver,
    Hit,
    Start,
    admin_webhook,
    create_webhook,
    eventually,
    fail_first,
    ok_data,
    publish,
    settled,
    signature_ok,
)

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
DELIVERING = {
    "worker": True,
    "dev_mode": True,
    "retry_schedule": "0.2,0.4,0.8",
    "delivery_timeout": 2.0,
    "poll_interval": 0.05,
}


class Traced:
    """A delivering app with tracing on, its spans, and an admin client."""

    def __init__(self, svc: Service, api: httpx.AsyncClient, exporter: InMemorySpanExporter):
        self.svc = svc
        self.api = api
        self.exporter = exporter

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    async def wait_spans(self, name: str, n: int) -> list[ReadableSpan]:
        found: list[ReadableSpan] = await eventually(
            lambda: _now(self.spans(name)), lambda s: len(s) >= n, what=f"{n} {name} spans"
        )
        return found


async def _now(value: Any) -> Any:
    return value


def traced_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
async def traced(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Any]]:
    """``await traced(**settings)``: a delivering app with an in-memory span exporter."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None], httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> Traced:
        provider, exporter = traced_provider()
        server, task, svc = await start_service(
            make_settings(**{**DELIVERING, **overrides}), tracing=OpenTelemetryTracing(provider)
        )
        api = svc.client(await svc.new_key("ops", admin=True))
        running.append((server, task, api))
        return Traced(svc, api, exporter)

    yield start
    for server, task, api in running:
        await api.aclose()
        server.should_exit = True
        await task


def traceparent_of(hit: Hit) -> tuple[str, str]:
    """The trace and span ids of the W3C traceparent the receiver got."""
    match = TRACEPARENT.match(hit.headers.get("traceparent", ""))
    assert match is not None, hit.headers
    trace_id, span_id, _flags = match.groups()
    assert int(trace_id, 16) != 0 and int(span_id, 16) != 0
    return trace_id, span_id


def ids_of(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def linked_to(span: ReadableSpan, ingest: ReadableSpan) -> bool:
    assert ingest.context is not None
    return any(
        link.context.span_id == ingest.context.span_id
        and link.context.trace_id == ingest.context.trace_id
        for link in span.links
    )


async def stored_trace_contexts(rt: Runtime) -> dict[str, str | None]:
    async with rt.db.read() as conn:
        rows = await conn.execute(select(events.c.id, events.c.trace_context))
        return {r.id: r.trace_context for r in rows}


def attribute_values(spans: Sequence[ReadableSpan]) -> str:
    return " ".join(str(v) for s in spans for v in (s.attributes or {}).values())


# --- on ----------------------------------------------------------------------------------


async def test_an_ingest_and_its_delivery_are_linked_spans_and_the_receiver_gets_traceparent(
    traced: Callable[..., Any], receivers: Start
) -> None:
    rx = await receivers()
    env: Traced = await traced()
    hook = await create_webhook(env.api, rx.url() + "?token=hush")
    await publish(env.api, data={"id": "post_1", "content": "a private payload"}, id="evt_t1")

    (hit,) = await rx.wait_for_count(1)
    (ingest,) = await env.wait_spans(INGEST_SPAN, 1)
    (deliver,) = await env.wait_spans(DELIVER_SPAN, 1)

    assert ingest.kind is SpanKind.SERVER
    assert dict(ingest.attributes or {}) == {
        "bellhook.source": "http",
        "bellhook.events": 1,
        "bellhook.event_id": "evt_t1",
        "bellhook.event_type": "post.created",
        "bellhook.deliveries": 1,
        "bellhook.duplicates": 0,
    }
    assert deliver.kind is SpanKind.CLIENT
    assert linked_to(deliver, ingest)
    assert deliver.parent is not None and ingest.context is not None
    assert deliver.parent.span_id == ingest.context.span_id
    attributes = dict(deliver.attributes or {})
    delivery_id = attributes["bellhook.delivery_id"]
    assert isinstance(delivery_id, str) and delivery_id.startswith("dlv")
    assert attributes["bellhook.webhook_id"] == hook["id"]
    assert attributes["bellhook.event_id"] == "evt_t1"
    assert attributes["bellhook.event_type"] == "post.created"
    assert attributes["bellhook.attempt"] == 1
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.address"] == "127.0.0.1"
    assert "url.full" not in attributes and "url.path" not in attributes  # tokens live there
    assert "error.type" not in attributes
    assert deliver.status.status_code is not StatusCode.ERROR

    # The receiver's traceparent is the delivery span's; the signature is unchanged.
    assert traceparent_of(hit) == ids_of(deliver)
    assert signature_ok(hit)
    assert hit.json()["data"]["content"] == "a private payload"

    # Ids as attributes; never the payload, the secret or the URL's query.
    values = attribute_values([ingest, deliver])
    for private in ("a private payload", SECRET, "hush"):
        assert private not in values

    # The ingest span's context is stored with its event, for any worker to link to.
    stored = (await stored_trace_contexts(env.svc.runtime))["evt_t1"]
    assert stored is not None
    match = TRACEPARENT.match(stored)
    assert match is not None and (match[1], match[2]) == ids_of(ingest)


async def test_a_publishers_traceparent_makes_the_ingest_part_of_its_trace(
    traced: Callable[..., Any], receivers: Start
) -> None:
    rx = await receivers()
    env: Traced = await traced()
    await create_webhook(env.api, rx.url())
    publisher_trace, publisher_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await publish(
        env.api, id="evt_t2", headers={"traceparent": f"00-{publisher_trace}-{publisher_span}-01"}
    )

    (hit,) = await rx.wait_for_count(1)
    (ingest,) = await env.wait_spans(INGEST_SPAN, 1)
    (deliver,) = await env.wait_spans(DELIVER_SPAN, 1)
    assert ingest.parent is not None and ingest.parent.is_remote
    assert f"{ingest.parent.span_id:016x}" == publisher_span
    assert ids_of(ingest)[0] == publisher_trace
    # The delivery (and so the receiver) stays in the publisher's trace.
    assert ids_of(deliver)[0] == publisher_trace
    assert linked_to(deliver, ingest)
    assert traceparent_of(hit) == ids_of(deliver)


async def test_a_retried_delivery_is_two_attempt_spans_linked_to_one_ingest(
    traced: Callable[..., Any], receivers: Start
) -> None:
    rx = await receivers(fail_first(1))
    env: Traced = await traced()
    hook = await create_webhook(env.api, rx.url())
    await publish(env.api, id="evt_t3")
    await settled(env.api, hook["id"], "evt_t3", "succeeded")

    first, second = await rx.wait_for_count(2)
    (ingest,) = await env.wait_spans(INGEST_SPAN, 1)
    attempts = sorted(
        await env.wait_spans(DELIVER_SPAN, 2),
        key=lambda s: (s.attributes or {})["bellhook.attempt"],
    )
    assert len(attempts) == 2
    failed, succeeded = attempts
    assert all(linked_to(s, ingest) for s in attempts)
    assert (failed.attributes or {})["bellhook.delivery_id"] == (succeeded.attributes or {})[
        "bellhook.delivery_id"
    ]
    assert [(s.attributes or {})["bellhook.attempt"] for s in attempts] == [1, 2]

    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "http_status"
    assert (failed.attributes or {})["http.response.status_code"] == 500
    assert succeeded.status.status_code is not StatusCode.ERROR
    assert (succeeded.attributes or {})["http.response.status_code"] == 200

    # Each request carried its own attempt's span.
    assert traceparent_of(first) == ids_of(failed)
    assert traceparent_of(second) == ids_of(succeeded)
    assert signature_ok(first) and signature_ok(second)


async def test_a_batch_is_one_ingest_span_that_each_delivery_links_to(
    traced: Callable[..., Any], receivers: Start
) -> None:
    rx = await receivers()
    env: Traced = await traced()
    await create_webhook(env.api, rx.url())
    batch = {"events": [{"id": f"b{i}", "event": "post.created", "data": {}} for i in range(3)]}
    ok_data(await env.api.post("/api/events/batch", json=batch), 202)

    await rx.wait_for_count(3)
    (ingest,) = await env.wait_spans(INGEST_SPAN, 1)
    delivered = await env.wait_spans(DELIVER_SPAN, 3)
    assert (ingest.attributes or {})["bellhook.source"] == "batch"
    assert (ingest.attributes or {})["bellhook.events"] == 3
    assert "bellhook.event_id" not in (ingest.attributes or {})
    assert all(linked_to(s, ingest) for s in delivered)
    stored = await stored_trace_contexts(env.svc.runtime)
    assert len({stored[f"b{i}"] for i in range(3)}) == 1


async def test_a_manual_retry_is_an_attempt_span_too(
    traced: Callable[..., Any], receivers: Start
) -> None:
    rx = await receivers()
    env: Traced = await traced()
    hook = await create_webhook(env.api, rx.url())
    await publish(env.api, id="evt_t4")
    delivery = await settled(env.api, hook["id"], "evt_t4", "succeeded")
    retried = await env.api.post(f"/api/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry")
    assert retried.status_code < 300, retried.text

    _first, again = await rx.wait_for_count(2)
    (ingest,) = await env.wait_spans(INGEST_SPAN, 1)
    attempts = await env.wait_spans(DELIVER_SPAN, 2)
    (manual,) = [s for s in attempts if (s.attributes or {}).get("bellhook.manual")]
    assert linked_to(manual, ingest)
    assert traceparent_of(again) == ids_of(manual)
    assert signature_ok(again)


async def test_a_stored_kafka_batch_is_one_ingest_span_on_each_of_its_events(
    make_settings: Callable[..., Settings],
) -> None:
    provider, exporter = traced_provider()
    now = datetime.now(UTC)

    class NoBroker:
        def __init__(self, *_args: Any, **_kwargs: Any) -> None:
            pass

    async with open_runtime(make_settings(), tracing=OpenTelemetryTracing(provider)) as rt:
        await admin_webhook(rt, now)
        consumer = KafkaIngest(rt, client_factory=NoBroker)  # type: ignore[arg-type]
        messages = [
            Message("t", 0, i, None, b'{"event": "post.created", "data": {}, "id": "k%d"}' % i)
            for i in range(2)
        ]
        await consumer._store_once(messages)
        stored = await stored_trace_contexts(rt)
    (ingest,) = [s for s in exporter.get_finished_spans() if s.name == INGEST_SPAN]
    assert ingest.kind is SpanKind.CONSUMER
    assert (ingest.attributes or {})["bellhook.source"] == "kafka"
    assert (ingest.attributes or {})["bellhook.events"] == 2
    trace_contexts = {stored["k0"], stored["k1"]}
    assert len(trace_contexts) == 1
    (stored_context,) = trace_contexts
    match = TRACEPARENT.match(stored_context or "")
    assert match is not None and (match[1], match[2]) == ids_of(ingest)


# --- off (the default) -------------------------------------------------------------------


async def test_off_by_default_no_traceparent_and_no_stored_context(
    delivering: Deliver, receivers: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    rx = await receivers()
    env = await delivering()
    assert env.svc.runtime.tracing.on is False
    await create_webhook(env.api, rx.url())
    await publish(env.api, id="evt_off", headers={"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"})

    (hit,) = await rx.wait_for_count(1, timeout=WAIT)
    assert "traceparent" not in hit.headers
    assert signature_ok(hit)
    assert (await stored_trace_contexts(env.svc.runtime)) == {"evt_off": None}


async def test_the_otlp_endpoint_turns_tracing_on(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As an operator turns it on: the SDK's provider with an OTLP exporter, shut down with
    # the runtime (nothing is sent: no span was made).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    async with open_runtime(make_settings()) as rt:
        assert isinstance(rt.tracing, OpenTelemetryTracing)
        assert rt.tracing.owned
        resource = rt.tracing.provider.resource.attributes
        assert resource["service.name"] == "bellhook"
