"""The dead-letter table: messages the Kafka consumer refused, for operators to see."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bellhook.domain.ids import new_ids
from bellhook.domain.paging import Cursor, Page
from bellhook.store.database import Database
from bellhook.store.paging import newest_first, page_of
from bellhook.store.tables import ingest_errors


@dataclass(frozen=True, slots=True)
class IngestError:
    """A refused message: where it was, the start of what it held, and why."""

    topic: str
    partition: int
    offset: int
    key: str | None
    excerpt: str
    code: str
    reason: str
    id: str = ""
    created_at: datetime | None = None


class IngestErrorRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, refused: Sequence[IngestError], *, now: datetime) -> None:
        """Store ``refused``; a message already recorded (consumed again after a crash
        or a rebalance) is left as it is."""
        if not refused:
            return
        # Sorted, and given in the messages' order: newest first lists a batch's refused
        # messages from the last offset down.
        ids = sorted(new_ids("ier", len(refused)))
        refused = sorted(refused, key=lambda e: (e.topic, e.partition, e.offset))
        rows = [
            {
                "id": row_id,
                "topic": e.topic,
                "partition": e.partition,
                "offset": e.offset,
                "key": e.key,
                "excerpt": e.excerpt,
                "code": e.code,
                "reason": e.reason,
                "created_at": now,
            }
            for row_id, e in zip(ids, refused, strict=True)
        ]
        insert = sqlite_insert if self.db.is_sqlite else pg_insert
        statement = insert(ingest_errors).on_conflict_do_nothing(
            index_elements=["topic", "partition", "offset"]
        )
        async with self.db.write() as conn:
            await conn.execute(statement, rows)

    async def page(self, *, limit: int, cursor: Cursor | None) -> Page[IngestError]:
        query = newest_first(select(ingest_errors), ingest_errors, limit=limit, cursor=cursor)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return page_of(rows, limit, _to_error)

    async def purge(self, *, before: datetime, batch: int) -> int:
        """Delete one batch of records older than ``before``; call until it returns 0."""
        async with self.db.write() as conn:
            ids = (
                (
                    await conn.execute(
                        select(ingest_errors.c.id)
                        .where(ingest_errors.c.created_at < before)
                        .limit(batch)
                        .with_for_update(skip_locked=True)  # as deliveries' purge
                    )
                )
                .scalars()
                .all()
            )
            if ids:
                await conn.execute(delete(ingest_errors).where(ingest_errors.c.id.in_(ids)))
            return len(ids)


def _to_error(row: Row[object]) -> IngestError:
    m = row._mapping
    return IngestError(
        topic=m["topic"],
        partition=m["partition"],
        offset=m["offset"],
        key=m["key"],
        excerpt=m["excerpt"],
        code=m["code"],
        reason=m["reason"],
        id=m["id"],
        created_at=m["created_at"],
    )
