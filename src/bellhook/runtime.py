"""The resources one bellhook process holds, opened and closed together.

``serve``, ``worker`` and the CLI commands build a Runtime from Settings; nothing
here exists before ``open_runtime`` is entered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bellhook.config import Settings
from bellhook.delivery.resolver import DestinationGuard
from bellhook.delivery.sender import Sender
from bellhook.domain.destination import DestinationPolicy, Resolver, parse_networks
from bellhook.observability.metrics import Metrics
from bellhook.observability.tracing import Tracing, from_environment
from bellhook.store.database import Database, PoolOptions
from bellhook.store.deliveries import DeliveryRepository
from bellhook.store.events import EventRepository
from bellhook.store.ingest_errors import IngestErrorRepository
from bellhook.store.keys import KeyRepository
from bellhook.store.secretbox import OpenedSecrets, SecretBox
from bellhook.store.webhooks import WebhookRepository

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: Database
    keys: KeyRepository
    webhooks: WebhookRepository
    events: EventRepository
    deliveries: DeliveryRepository
    ingest_errors: IngestErrorRepository
    guard: DestinationGuard
    sender: Sender
    clock: Clock
    metrics: Metrics
    # What runs in this process, by name ("dispatcher", "kafka"), each with a function
    # saying "ok" or why not: what /readyz reports (observability.readiness).
    components: dict[str, Callable[[], str]] = field(default_factory=dict)
    # Set when there may be new work for a dispatcher in this process (new events,
    # freed slots); saves waiting for the next poll.
    work_available: asyncio.Event = field(default_factory=asyncio.Event)
    # OpenTelemetry spans of ingests and attempts; off (Tracing()) unless asked for.
    tracing: Tracing = field(default_factory=Tracing)

    async def check_destination(self, url: str) -> str:
        """The URL as stored, once it and every address it resolves to pass the policy."""
        await self.guard.check_registration(url)
        return url


def destination_policy(settings: Settings) -> DestinationPolicy:
    return DestinationPolicy(
        dev_mode=settings.dev_mode, allowed_networks=parse_networks(settings.allowed_networks)
    )


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    migrate: bool = True,
    clock: Clock = utc_now,
    resolver: Resolver | None = None,
    tracing: Tracing | None = None,
) -> AsyncIterator[Runtime]:
    """``tracing``: as the OTEL_* environment says unless given (tests inject one)."""
    box = SecretBox.from_setting(settings.encryption_key)  # a bad key fails here, first
    if tracing is None:
        tracing = from_environment()  # OpenTelemetry's own variables, not Settings
    path = settings.sqlite_path()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    guard = DestinationGuard(destination_policy(settings), resolver)
    db = Database(settings.database_url, pool=PoolOptions.from_settings(settings))
    sender = Sender(
        guard, timeout=settings.delivery_timeout, max_connections=settings.max_concurrency
    )
    try:
        if migrate:
            await db.migrate()
        webhooks = WebhookRepository(
            db, max_per_owner=settings.max_webhooks_per_owner, secretbox=box
        )
        await webhooks.check_stored_secrets()  # a missing or wrong key fails at start
        await sender.open()
        opened = OpenedSecrets(box)  # shared: ingest and claims open the same secrets
        yield Runtime(
            settings=settings,
            db=db,
            keys=KeyRepository(db, clock=clock),
            webhooks=webhooks,
            events=EventRepository(db, opened=opened),
            deliveries=DeliveryRepository(db, secretbox=box, opened=opened),
            ingest_errors=IngestErrorRepository(db),
            guard=guard,
            sender=sender,
            clock=clock,
            metrics=Metrics(),
            tracing=tracing,
        )
    finally:
        await sender.close()
        await db.close()
        await tracing.close()
