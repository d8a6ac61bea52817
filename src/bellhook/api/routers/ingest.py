"""/api/ingest: what the Kafka consumer could not accept (admin keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from bellhook.api.deps import AdminDep, RuntimeDep
from bellhook.api.schemas import (
    API_ERRORS,
    IngestErrorOut,
    ListEnvelope,
    Pagination,
    error_responses,
)
from bellhook.domain.paging import DEFAULT_LIMIT, MAX_LIMIT, Cursor

router = APIRouter(
    prefix="/api/ingest",
    tags=["ingest"],
    responses=error_responses(*API_ERRORS, 403),
)


@router.get("/errors", summary="Messages the Kafka consumer refused, newest first")
async def list_ingest_errors(
    _caller: AdminDep,
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ListEnvelope[IngestErrorOut]:
    """Each refused message once, with its topic, partition and offset, the start of its
    key and value, and the reason. Kept for ``BELLHOOK_RETENTION_DAYS``."""
    page = await rt.ingest_errors.page(
        limit=limit, cursor=Cursor.decode(cursor) if cursor else None
    )
    return ListEnvelope(
        data=[
            IngestErrorOut(
                id=e.id,
                topic=e.topic,
                partition=e.partition,
                offset=e.offset,
                key=e.key,
                excerpt=e.excerpt,
                code=e.code,
                reason=e.reason,
                received_at=e.created_at,
            )
            for e in page.items
        ],
        pagination=Pagination(next_cursor=page.next_cursor),
    )
