"""The Prometheus metrics of one process, from prometheus-client.

A ``Metrics`` is made per runtime, with a registry of its own: nothing exists at import
time, and two apps in one process (tests) count apart. Under ``worker --processes N``
the children run with ``PROMETHEUS_MULTIPROC_DIR`` set (``supervisor``), so that their
values go to files that the supervising process sums (``multiprocess_registry``).

Labels are bounded: event types (the catalog), outcome kinds, sources, reasons (error
codes), webhook statuses, Kafka partitions. No URL, owner, webhook or event id is ever a
label value: a series per webhook would grow without bound.

On the delivery path, outcomes are counted per flushed batch (grouped, one increment
per label set) and the labelled children are looked up once and kept, so that counting
costs a delivery about two histogram observations.
"""

from __future__ import annotations

import os
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.process_collector import ProcessCollector

from bellhook import __version__
from bellhook.domain.models import DeliveryStatus

if TYPE_CHECKING:
    from bellhook.store.deliveries import Completed

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# From a few milliseconds (handed straight to a sender) to the retry schedule's days.
END_TO_END_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    *(60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0),
)
SUCCESS = "success"


def in_child_process() -> bool:
    """Whether this process writes its values for a supervising process to sum."""
    return bool(os.environ.get(MULTIPROCESS_ENV) or os.environ.get(MULTIPROCESS_ENV.lower()))


class Metrics:
    """What this process counts. The database's gauges are ``DatabaseGauges``'."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.attempts = Counter(
            "bellhook_delivery_attempts",
            "Delivery attempts, automatic and manual, by outcome (success or error kind).",
            ("event_type", "outcome"),
            registry=r,
        )
        self.failed = Counter(
            "bellhook_deliveries_failed",
            "Deliveries that failed for good (no retry left, or 410 Gone).",
            ("event_type", "error_kind"),
            registry=r,
        )
        self.retries = Counter(
            "bellhook_retries_scheduled",
            "Failed attempts that scheduled another.",
            ("event_type", "error_kind"),
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "bellhook_delivery_attempt_duration_seconds",
            "One attempt: from sending the request to reading the response.",
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "bellhook_delivery_end_to_end_seconds",
            "From the event's acceptance to its delivery's successful scheduled attempt.",
            buckets=END_TO_END_BUCKETS,
            registry=r,
        )
        self.auto_disabled = Counter(
            "bellhook_webhooks_auto_disabled",
            "Webhooks disabled by bellhook: 410 Gone, or failing for BELLHOOK_AUTO_DISABLE_AFTER.",
            registry=r,
        )
        self.ingested = Counter(
            "bellhook_events_ingested",
            "New events stored, by source (http, batch, kafka).",
            ("source", "event_type"),
            registry=r,
        )
        self.duplicates = Counter(
            "bellhook_events_duplicate",
            "Events whose id was stored already (idempotent replays: no fan-out).",
            ("source",),
            registry=r,
        )
        self.rejected = Counter(
            "bellhook_events_rejected",
            "Events refused, by source and reason (the error code).",
            ("source", "reason"),
            registry=r,
        )
        self.kafka_lag = Gauge(
            "bellhook_kafka_consumer_lag",
            "Messages in a partition after the last committed offset (this consumer's).",
            ("topic", "partition"),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.kafka_paused = Gauge(
            "bellhook_kafka_paused",
            "1 while the Kafka consumer is paused (backpressure or a database outage).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.kafka_rebalances = Counter(
            "bellhook_kafka_rebalances",
            "Partition assignments this consumer took part in: assigned, revoked.",
            ("kind",),
            registry=r,
        )
        if not in_child_process():  # the supervising process says these for the children
            build = Gauge("bellhook_build_info", "The running version.", ("version",), registry=r)
            build.labels(__version__).set(1)
            ProcessCollector(registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Counter, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # --- delivery ------------------------------------------------------------------------

    def delivered(self, batch: Iterable[Completed], *, now: datetime) -> None:
        """Count a batch of recorded attempts."""
        attempts: Tally[tuple[str, str]] = Tally()
        retries: Tally[tuple[str, str]] = Tally()
        failed: Tally[tuple[str, str]] = Tally()
        observe_attempt = self.attempt_seconds.observe
        observe_end_to_end = self.end_to_end_seconds.observe
        for c in batch:
            job, result = c.job, c.result
            observe_attempt(result.latency_ms / 1000)
            decision = c.decision
            # A manual retry (no decision) leaves the schedule alone, and a test send is
            # no delivery of an event: attempts, but neither retries, failures nor
            # end-to-end times (a retry of a delivery that succeeded would count twice).
            scheduled = decision is not None and not job.is_test
            if result.succeeded:
                attempts[job.event_type, SUCCESS] += 1
                if scheduled and job.accepted_at is not None:
                    observe_end_to_end(max((now - job.accepted_at).total_seconds(), 0.0))
                continue
            kind = str(result.error_kind or "unknown")
            attempts[job.event_type, kind] += 1
            if decision is None or not scheduled:
                continue
            if decision.status is DeliveryStatus.PENDING:
                retries[job.event_type, kind] += 1
            elif decision.status is DeliveryStatus.FAILED:
                failed[job.event_type, kind] += 1
        for tally, metric in ((attempts, self.attempts), (retries, self.retries)):
            for labels, n in tally.items():
                self._child(metric, *labels).inc(n)
        for labels, n in failed.items():
            self._child(self.failed, *labels).inc(n)

    def disabled(self, webhooks: int) -> None:
        if webhooks:
            self.auto_disabled.inc(webhooks)

    # --- ingest --------------------------------------------------------------------------

    def ingested_events(
        self, source: str, types: Sequence[str], duplicates: Sequence[bool]
    ) -> None:
        """Count a stored batch: each event's type, and whether it was seen before."""
        fresh: Tally[str] = Tally(t for t, dup in zip(types, duplicates, strict=True) if not dup)
        for event_type, n in fresh.items():
            self._child(self.ingested, source, event_type).inc(n)
        seen = len(types) - sum(fresh.values())
        if seen:
            self._child(self.duplicates, source).inc(seen)

    def rejected_events(self, source: str, reasons: Iterable[str]) -> None:
        for reason, n in Tally(reasons).items():
            self._child(self.rejected, source, reason).inc(n)

    # --- Kafka ---------------------------------------------------------------------------

    def kafka_lags(self, lags: Iterable[tuple[str, int, int]]) -> None:
        for topic, partition, lag in lags:
            self.kafka_lag.labels(topic, str(partition)).set(lag)

    def kafka_unassigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions this consumer no longer reads: their lag is another's to say."""
        for topic, partition in partitions:
            self.kafka_lag.remove(topic, str(partition))


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry of the values that child processes wrote under ``path``, summed."""
    registry = CollectorRegistry()
    _process_metrics(registry)
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def _process_metrics(registry: CollectorRegistry) -> None:
    """The version, and this process's CPU, memory and file descriptors."""
    build = Gauge("bellhook_build_info", "The running version.", ("version",), registry=registry)
    build.labels(__version__).set(1)
    ProcessCollector(registry=registry)
