"""What ``/metrics`` answers, on the API's port and on ``--metrics-port`` alike.

The database's gauges (the backlog, webhooks by status) are read at scrape time,
not by a loop in every process: no scrape, no query. A count reads the pending
deliveries' index (0.6 s at a million pending on PostgreSQL), so that a value is
reused for BELLHOOK_METRICS_REFRESH (5 s; 0: read at every scrape), or for 20 times as
long as its query took, whichever is longer; scrapes meanwhile share the query under way.
"""

from __future__ import annotations

import asyncio
import hmac
import time

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from bellhook.errors import StorageUnavailable
from bellhook.runtime import Runtime

log = structlog.get_logger("bellhook.metrics")

QUERY_SHARE = 20.0
CONTENT_TYPE = CONTENT_TYPE_LATEST


class DatabaseGauges:
    def __init__(self, registry: CollectorRegistry, *, refresh: float = 5.0) -> None:
        self.refresh_at_least = refresh
        self.pending = Gauge(
            "bellhook_deliveries_pending",
            "Deliveries waiting for a send or a retry.",
            registry=registry,
        )
        self.due = Gauge(
            "bellhook_deliveries_due",
            "Pending deliveries whose time has come, not yet sent.",
            registry=registry,
        )
        self.oldest_due = Gauge(
            "bellhook_oldest_due_delivery_age_seconds",
            "How long the oldest due delivery has waited past its time (0: none due).",
            registry=registry,
        )
        self.webhooks = Gauge(
            "bellhook_webhooks", "Webhooks by status.", ("status",), registry=registry
        )
        self._next_at = 0.0
        self._refreshing = asyncio.Lock()

    async def refresh(self, rt: Runtime) -> None:
        started = time.monotonic()
        if (self.refresh_at_least and started < self._next_at) or self._refreshing.locked():
            return  # the last values (scrapes at once share one query)
        async with self._refreshing:
            await self._refresh(rt, started)

    async def _refresh(self, rt: Runtime, started: float) -> None:
        try:
            backlog = await rt.deliveries.backlog(now=rt.clock())
            statuses = await rt.webhooks.counts_by_status()
        except StorageUnavailable:
            # The last values stay; /readyz and the outage log lines say why.
            self._next_at = started + self.refresh_at_least
            log.debug("metrics.database_gauges_unavailable")
            return
        self.pending.set(backlog.pending)
        self.due.set(backlog.due)
        self.oldest_due.set(backlog.oldest_due_seconds)
        for status, n in statuses.items():
            self.webhooks.labels(status).set(n)
        took = time.monotonic() - started
        self._next_at = started + max(self.refresh_at_least, QUERY_SHARE * took)


class Exposition:
    """The text format of ``registry`` (this process's, or its children's summed), with
    the database's gauges added."""

    def __init__(self, rt: Runtime, registry: CollectorRegistry | None = None) -> None:
        self.rt = rt
        self.registry = registry if registry is not None else rt.metrics.registry
        self.gauges = DatabaseGauges(self.registry, refresh=rt.settings.metrics_refresh)
        token = rt.settings.metrics_token
        self._token = token.get_secret_value().encode() if token is not None else None

    def allows(self, authorization: str | None) -> bool:
        """Whether a scrape with this ``Authorization`` header may read the metrics."""
        if self._token is None:
            return True
        given = (authorization or "").encode()
        return hmac.compare_digest(given, b"Bearer " + self._token)

    async def render(self) -> bytes:
        await self.gauges.refresh(self.rt)
        return generate_latest(self.registry)
