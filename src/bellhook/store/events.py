"""Ingest: an event and all its deliveries, committed in one transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bellhook.domain.ids import new_id
from bellhook.domain.models import DeliveryStatus, WebhookStatus
from bellhook.domain.routing import Route, recipients
from bellhook.store.database import Database
from bellhook.store.tables import deliveries, events, webhooks


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    type: str
    data_json: str  # exactly the bytes receivers get (JS-compatible)
    timestamp: datetime
    audience: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Accepted:
    event_id: str
    deliveries: int
    duplicate: bool


class EventRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ingest(self, batch: list[NewEvent], *, now: datetime) -> list[Accepted]:
        """Store events not seen before and schedule their deliveries, all or nothing."""
        async with self.db.write() as conn:
            routes = await active_routes(conn)
            return [await self._ingest_one(conn, e, routes, now) for e in batch]

    async def _ingest_one(
        self, conn: AsyncConnection, event: NewEvent, routes: list[Route], now: datetime
    ) -> Accepted:
        insert_event = (pg_insert if self.db.dialect == "postgresql" else sqlite_insert)(events)
        result = await conn.execute(
            insert_event.values(
                id=event.id,
                type=event.type,
                data=event.data_json,
                timestamp=event.timestamp,
                audience=None if event.audience is None else json.dumps(list(event.audience)),
                created_at=now,
            ).on_conflict_do_nothing(index_elements=["id"])
        )
        if result.rowcount == 0:  # seen before: idempotent, nothing new scheduled
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(deliveries)
                    .where(deliveries.c.event_id == event.id, deliveries.c.is_test.is_(False))
                )
            ).scalar_one()
            return Accepted(event.id, count, duplicate=True)
        targets = recipients(routes, event.type, event.audience)
        if targets:
            await conn.execute(
                insert(deliveries),
                [_new_delivery(event.id, event.type, wid, now) for wid in targets],
            )
        return Accepted(event.id, len(targets), duplicate=False)

    async def schedule_test(self, event: NewEvent, webhook_id: str, *, now: datetime) -> str:
        """Store a test event with one delivery to one webhook, already claimed by the caller."""
        delivery = _new_delivery(event.id, event.type, webhook_id, now, is_test=True)
        delivery["next_attempt_at"] = None  # sent right away by the API, never by the queue
        async with self.db.write() as conn:
            await conn.execute(
                insert(events).values(
                    id=event.id,
                    type=event.type,
                    data=event.data_json,
                    timestamp=event.timestamp,
                    audience=None,
                    created_at=now,
                )
            )
            await conn.execute(insert(deliveries).values(**delivery))
        return str(delivery["id"])


def _new_delivery(
    event_id: str, event_type: str, webhook_id: str, now: datetime, *, is_test: bool = False
) -> dict[str, Any]:
    return {
        "id": new_id("dlv"),
        "event_id": event_id,
        "webhook_id": webhook_id,
        "event_type": event_type,
        "status": DeliveryStatus.PENDING.value,
        "attempt_count": 0,
        "schedule_step": 0,
        "next_attempt_at": now,
        "is_test": is_test,
        "created_at": now,
        "updated_at": now,
    }


async def active_routes(conn: AsyncConnection) -> list[Route]:
    rows = await conn.execute(
        select(webhooks.c.id, webhooks.c.owner_id, webhooks.c.admin_owned, webhooks.c.events).where(
            webhooks.c.status == WebhookStatus.ACTIVE.value
        )
    )
    return [Route(r.id, r.owner_id, bool(r.admin_owned), tuple(json.loads(r.events))) for r in rows]
