"""/api/event-types: the catalog of events a webhook can subscribe to."""

from __future__ import annotations

from fastapi import APIRouter

from bellhook.api.deps import PrincipalDep
from bellhook.api.schemas import EventTypeOut, ListEnvelope, Pagination, error_responses
from bellhook.domain.catalog import CATALOG

router = APIRouter(prefix="/api/event-types", tags=["events"], responses=error_responses(401, 429))


@router.get("", summary="The event catalog")
async def list_event_types(_caller: PrincipalDep) -> ListEnvelope[EventTypeOut]:
    return ListEnvelope(
        data=[EventTypeOut.of(t) for t in CATALOG.values()],
        pagination=Pagination(next_cursor=None),
    )
