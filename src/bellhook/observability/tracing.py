"""Optional OpenTelemetry tracing (``pip install 'bellhook[otel]'``).

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. When on:

- ``bellhook.ingest``: a span per ingest (an HTTP call, a batch call, a stored Kafka
  batch). An HTTP publisher's ``traceparent`` makes it part of the publisher's trace.
  Its own traceparent is stored with each of its events (``events.trace_context``), so
  that every delivery attempt finds it, in whichever worker process and however late.
- ``bellhook.deliver``: a span per delivery attempt (kind CLIENT), a child of its
  event's ingest span and linked to it; the receiver gets its ``traceparent`` header
  (W3C TraceContext). The signature covers the body only, so it does not change.

Spans carry ids, types, counts, status codes and error kinds: never a payload, a
secret, or a URL's query string. They are exported in batches (OTLP over HTTP,
protobuf) by a background thread; ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER`` and the ``OTEL_EXPORTER_OTLP_*`` variables work as the SDK
documents them.

When off, this module imports nothing of OpenTelemetry, and the delivery loop checks
one attribute per attempt (``Tracing.on``). Nothing else in bellhook imports
OpenTelemetry: the callers go through ``Tracing``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bellhook import __version__
from bellhook.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link, Span, SpanKind

    from bellhook.delivery.sender import Sender, SignedRequest
    from bellhook.domain.outcome import AttemptResult
    from bellhook.store.deliveries import Job
    from bellhook.store.events import Accepted, NewEvent

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACEPARENT = "traceparent"
INGEST_SPAN = "bellhook.ingest"
DELIVER_SPAN = "bellhook.deliver"
SERVICE_NAME = "bellhook"


class IngestTrace:
    """What an ingest does with its span: stamp its events, then say what came of it."""

    traceparent: str | None = None  # None: not traced

    def traced(self, events: Sequence[NewEvent]) -> list[NewEvent]:
        """``events`` with this span's traceparent as their trace context."""
        return list(events)

    def accepted(self, results: Sequence[Accepted]) -> None:
        """The deliveries scheduled and the duplicates found."""


class AttemptTrace:
    """An attempt's span: what the sender observed goes on it."""

    def record(self, result: AttemptResult) -> None:
        pass


_UNTRACED_INGEST = IngestTrace()
_UNTRACED_ATTEMPT = AttemptTrace()


class Tracing:
    """Tracing off: every method does nothing beyond the work itself. Callers on a hot
    path check ``on`` first and skip calling anything."""

    on = False

    @contextmanager
    def ingest(
        self,
        source: str,
        events: Sequence[NewEvent],
        *,
        carrier: Mapping[str, str] | None = None,
    ) -> Iterator[IngestTrace]:
        """A span around the ingest of ``events`` from ``source`` (http, batch, kafka),
        continuing the W3C trace context in ``carrier`` (a publisher's headers)."""
        yield _UNTRACED_INGEST

    @contextmanager
    def attempt(
        self, job: Job, headers: dict[str, str], *, manual: bool = False
    ) -> Iterator[AttemptTrace]:
        """A span around one attempt of ``job``; its traceparent goes into ``headers``."""
        yield _UNTRACED_ATTEMPT

    async def send(
        self,
        sender: Sender,
        job: Job,
        request: SignedRequest,
        *,
        started_at: datetime,
        manual: bool = False,
    ) -> AttemptResult:
        """``sender.send(request)`` in an attempt span."""
        with self.attempt(job, request.headers, manual=manual) as span:
            result = await sender.send(request, started_at=started_at)
            span.record(result)
        return result

    async def close(self) -> None:
        """Export what is left (at the runtime's end)."""


def from_environment(environ: Mapping[str, str] | None = None) -> Tracing:
    """Tracing as the environment asks: off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set;
    then an SDK tracer provider exporting over OTLP/HTTP, shut down by ``close``."""
    env = os.environ if environ is None else environ
    if not env.get(ENDPOINT_VARIABLE, "").strip():
        return Tracing()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigurationError(
            f"{ENDPOINT_VARIABLE} is set, but OpenTelemetry is not installed:"
            " install bellhook[otel], or unset it"
        ) from exc
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES first; "bellhook" when they name none.
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return OpenTelemetryTracing(provider, owned=True)


class _IngestSpan(IngestTrace):
    def __init__(self, span: Span, traceparent: str | None) -> None:
        self.span = span
        self.traceparent = traceparent

    def traced(self, events: Sequence[NewEvent]) -> list[NewEvent]:
        return [replace(e, trace_context=self.traceparent) for e in events]

    def accepted(self, results: Sequence[Accepted]) -> None:
        duplicates = sum(1 for r in results if r.duplicate)
        self.span.set_attribute("bellhook.deliveries", sum(r.deliveries for r in results))
        self.span.set_attribute("bellhook.duplicates", duplicates)


class _AttemptSpan(AttemptTrace):
    def __init__(self, span: Span) -> None:
        self.span = span

    def record(self, result: AttemptResult) -> None:
        from opentelemetry.trace import StatusCode

        if result.status_code is not None:
            self.span.set_attribute("http.response.status_code", result.status_code)
        if not result.succeeded:
            kind = result.error_kind.value if result.error_kind is not None else "unknown"
            self.span.set_attribute("error.type", kind)
            # The kind, not the message: a message may quote a Location header.
            self.span.set_status(StatusCode.ERROR, kind)


class OpenTelemetryTracing(Tracing):
    """Tracing on, with ``provider`` (the environment's, or one a test injects).

    ``owned``: ``close`` shuts the provider down (else it only flushes it).
    """

    on = True

    def __init__(self, provider: TracerProvider, *, owned: bool = False) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.owned = owned
        self.tracer = provider.get_tracer("bellhook", __version__)
        self.propagator = TraceContextTextMapPropagator()

    @contextmanager
    def ingest(
        self,
        source: str,
        events: Sequence[NewEvent],
        *,
        carrier: Mapping[str, str] | None = None,
    ) -> Iterator[IngestTrace]:
        from opentelemetry.trace import SpanKind

        attributes: dict[str, str | int] = {
            "bellhook.source": source,
            "bellhook.events": len(events),
        }
        if len(events) == 1:
            attributes["bellhook.event_id"] = events[0].id
            attributes["bellhook.event_type"] = events[0].type
        parent = self.propagator.extract(carrier) if carrier is not None else None
        kind = SpanKind.CONSUMER if source == "kafka" else SpanKind.SERVER
        with self._span(INGEST_SPAN, parent, kind, attributes, ()) as span:
            yield _IngestSpan(span, self._traceparent_of(span))

    @contextmanager
    def attempt(
        self, job: Job, headers: dict[str, str], *, manual: bool = False
    ) -> Iterator[AttemptTrace]:
        from opentelemetry import trace

        attributes: dict[str, str | int | bool] = {
            "bellhook.delivery_id": job.delivery_id,
            "bellhook.webhook_id": job.webhook_id,
            "bellhook.event_id": job.event_id,
            "bellhook.event_type": job.event_type,
            "bellhook.attempt": job.attempt_count + 1,
            "http.request.method": "POST",
            **_destination(job.url),
        }
        if manual:
            attributes["bellhook.manual"] = True
        if job.is_test:
            attributes["bellhook.test"] = True
        parent: Context | None = None
        links: list[trace.Link] = []
        if job.trace_context:
            parent = self.propagator.extract({TRACEPARENT: job.trace_context})
            ingest = trace.get_current_span(parent).get_span_context()
            if ingest.is_valid:
                links.append(trace.Link(ingest))
            else:
                parent = None
        with self._span(DELIVER_SPAN, parent, trace.SpanKind.CLIENT, attributes, links) as span:
            self.propagator.inject(headers, context=trace.set_span_in_context(span))
            yield _AttemptSpan(span)

    @contextmanager
    def _span(
        self,
        name: str,
        parent: Context | None,
        kind: SpanKind,
        attributes: Mapping[str, str | int | bool],
        links: Sequence[Link],
    ) -> Iterator[Span]:
        """A span that ends with the block: an exception is recorded on it, as an error.

        Not made the current span: bellhook hands contexts on explicitly, and the one in
        effect when the block started stays so."""
        from opentelemetry import context, trace

        span = self.tracer.start_span(
            name, context=parent or context.Context(), kind=kind, attributes=attributes, links=links
        )
        try:
            yield span
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            raise
        finally:
            span.end()

    def _traceparent_of(self, span: Span) -> str | None:
        from opentelemetry import trace

        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))
        return carrier.get(TRACEPARENT)

    async def close(self) -> None:
        # Exporting may wait on the collector: not on the event loop.
        if self.owned:
            await asyncio.to_thread(self.provider.shutdown)
        else:
            await asyncio.to_thread(self.provider.force_flush)


def _destination(url: str) -> dict[str, str | int]:
    """Where a delivery went: scheme, host and port only. Not the path: many receivers
    (Slack's, Discord's) put their token there, and spans go to a third party's
    collector; nor user info or the query string."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return {}
    return {"url.scheme": parts.scheme, "server.address": parts.hostname or "", "server.port": port}
