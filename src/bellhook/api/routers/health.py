"""/healthz: is this process up and its database reachable."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from bellhook import __version__
from bellhook.api.deps import RuntimeDep
from bellhook.api.errors import error_response
from bellhook.api.schemas import Envelope, ErrorEnvelope, Health

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="Liveness and database reachability",
    responses={503: {"model": ErrorEnvelope}},
    response_model=Envelope[Health],
)
async def healthz(rt: RuntimeDep) -> Envelope[Health] | JSONResponse:
    if not await rt.db.ping():
        return error_response(503, "database_unreachable", "the database cannot be reached")
    return Envelope(data=Health(status="ok", database="ok", version=__version__))
