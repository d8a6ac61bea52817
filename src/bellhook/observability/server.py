"""``--metrics-port``: /metrics, /healthz and /readyz for processes without the API
(``worker``, ``consume``, and the supervisor of ``worker --processes N``).

On aiohttp's server, which bellhook has already for delivery: uvicorn's would take
over the process's SIGTERM and SIGINT, which the worker handles itself to drain. The
answers are the API's (``api.routers.health``): the same checks, exposition and
envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from bellhook import __version__
from bellhook.errors import ConfigurationError
from bellhook.observability.exposition import CONTENT_TYPE, Exposition
from bellhook.observability.readiness import readiness
from bellhook.runtime import Runtime

log = structlog.get_logger("bellhook.metrics")


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "data": data}


def _error(code: str, message: str, details: list[dict[str, Any]] | None = None) -> Any:
    return {"success": False, "error": {"code": code, "message": message, "details": details or []}}


def operations_app(rt: Runtime, exposition: Exposition) -> web.Application:
    async def metrics(request: web.Request) -> web.StreamResponse:
        if not exposition.allows(request.headers.get("Authorization")):
            body = _error(
                "unauthorized", "/metrics needs Authorization: Bearer <BELLHOOK_METRICS_TOKEN>"
            )
            return web.json_response(body, status=401, headers={"WWW-Authenticate": "Bearer"})
        text = await exposition.render()
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_request: web.Request) -> web.StreamResponse:
        if not await rt.db.ping():
            body = _error("database_unreachable", "the database cannot be reached")
            return web.json_response(body, status=503)
        return web.json_response(
            _envelope({"status": "ok", "database": "ok", "version": __version__})
        )

    async def readyz(_request: web.Request) -> web.StreamResponse:
        state = await readiness(rt)
        if not state.ready:
            body = _error(
                "not_ready", "not ready: " + "; ".join(state.reasons), [{"checks": state.checks}]
            )
            return web.json_response(body, status=503)
        return web.json_response(_envelope({"status": "ready", "checks": state.checks}))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@asynccontextmanager
async def serving_operations(
    rt: Runtime, *, port: int, registry: CollectorRegistry | None = None
) -> AsyncIterator[int]:
    """Serve the operator's endpoints on ``port`` (0: any free one) of BELLHOOK_HOST for
    the block; yields the port."""
    exposition = Exposition(rt, registry)
    runner = web.AppRunner(operations_app(rt, exposition), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, rt.settings.host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {rt.settings.host}:{port}: {exc.strerror or exc}"
            ) from exc
        bound = runner.addresses[0][1] if runner.addresses else port
        log.info("metrics.serving", host=rt.settings.host, port=bound)
        yield bound
    finally:
        await runner.cleanup()
