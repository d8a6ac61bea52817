"""The operator's endpoints: /healthz (up), /readyz (ready for traffic), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from bellhook import __version__
from bellhook.api.deps import RuntimeDep
from bellhook.api.errors import error_response
from bellhook.api.schemas import Envelope, ErrorEnvelope, Health, Ready
from bellhook.observability.exposition import CONTENT_TYPE, Exposition
from bellhook.observability.readiness import readiness

router = APIRouter(tags=["operations"])


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


@router.get(
    "/readyz",
    summary="Ready for traffic: database, schema, dispatcher and Kafka consumer",
    responses={503: {"model": ErrorEnvelope}},
    response_model=Envelope[Ready],
)
async def readyz(rt: RuntimeDep) -> Envelope[Ready] | JSONResponse:
    state = await readiness(rt)
    if not state.ready:
        return error_response(
            503,
            "not_ready",
            "not ready: " + "; ".join(state.reasons),
            [{"checks": state.checks}],
        )
    return Envelope(data=Ready(status="ready", checks=state.checks))


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format; docs/operations.md)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}, 401: {"model": ErrorEnvelope}},
)
async def metrics(request: Request) -> Response:
    exposition: Exposition = request.app.state.exposition
    if not exposition.allows(request.headers.get("authorization")):
        return error_response(
            401,
            "unauthorized",
            "/metrics needs Authorization: Bearer <BELLHOOK_METRICS_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(await exposition.render(), media_type=CONTENT_TYPE)
