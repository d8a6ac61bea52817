"""The resources one bellhook process holds, opened and closed together.

``serve``, ``worker`` and the CLI commands build a Runtime from Settings; nothing
here exists before ``open_runtime`` is entered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from bellhook.config import Settings
from bellhook.delivery.resolver import SystemResolver
from bellhook.domain.destination import DestinationPolicy, Resolver, parse_networks
from bellhook.store.database import Database
from bellhook.store.keys import KeyRepository
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
    clock: Clock
    policy: DestinationPolicy
    resolver: Resolver

    async def check_destination(self, url: str) -> str:
        """The URL as stored, once it and every address it resolves to pass the policy."""
        await self.policy.check_resolved(url, self.resolver)
        return url


def destination_policy(settings: Settings) -> DestinationPolicy:
    return DestinationPolicy(
        dev_mode=settings.dev_mode, allowed_networks=parse_networks(settings.allowed_networks)
    )


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, migrate: bool = True, clock: Clock = utc_now,
    resolver: Resolver | None = None,
) -> AsyncIterator[Runtime]:
    path = settings.sqlite_path()
    if path is not None and path.parent != path:
        path.parent.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    try:
        if migrate:
            await db.migrate()
        yield Runtime(
            settings=settings,
            db=db,
            keys=KeyRepository(db),
            webhooks=WebhookRepository(db, max_per_owner=settings.max_webhooks_per_owner),
            clock=clock,
            policy=destination_policy(settings),
            resolver=resolver or SystemResolver(),
        )
    finally:
        await db.close()
