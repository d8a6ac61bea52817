"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from bellhook import __version__
from bellhook.api.errors import install_error_handlers
from bellhook.api.limits import BodyLimitMiddleware
from bellhook.api.ratelimit import ApiRateLimits
from bellhook.api.routers import deliveries, event_types, events, health, ingest, webhooks
from bellhook.config import Settings
from bellhook.delivery.dispatcher import running_dispatcher
from bellhook.domain.destination import Resolver
from bellhook.ingest.consumer import running_consumer
from bellhook.observability.exposition import Exposition
from bellhook.observability.tracing import Tracing
from bellhook.runtime import Clock, open_runtime, utc_now

MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024  # 1,000 events a call
log = structlog.get_logger("bellhook.api")

DESCRIPTION = """
bellhook delivers Bellamy Book events (posts, comments, reactions, registrations,
friend requests) to the HTTPS endpoints integrators register, as signed JSON POSTs
with retries and a delivery log.

Every `/api/*` call needs `Authorization: Bearer <api key>`. Every answer is an
envelope: `{"success": true, "data": ...}` or
`{"success": false, "error": {"code", "message", "details"}}`.
"""


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    resolver: Resolver | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The app for ``settings``; ``clock``, ``resolver`` and ``tracing`` (else as the
    OTEL_* environment says) are injectable for tests."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, clock=clock, resolver=resolver, tracing=tracing) as rt:
            app.state.runtime = rt
            app.state.exposition = Exposition(rt)
            if settings.dev_mode:
                log.warning(
                    "security.dev_mode",
                    message="DEVELOPMENT MODE: http:// and loopback/private webhook targets "
                    "are allowed. Never run production like this.",
                )
            elif settings.encryption_key is None:
                log.info(
                    "security.secrets_unencrypted",
                    message="webhook secrets are stored unencrypted: "
                    "set BELLHOOK_ENCRYPTION_KEY to encrypt them at rest",
                )
            if settings.encryption_key is not None and await rt.webhooks.has_plain_secrets():
                log.warning(
                    "security.plain_secrets_stored",
                    message="some webhook secrets are stored unencrypted; "
                    "run `bellhook secrets reencrypt` to encrypt them",
                )
            if not settings.worker:
                async with running_consumer(rt):
                    yield
                return
            # The dispatcher first: the consumer's events are handed to it as HTTP's are.
            async with running_dispatcher(rt), running_consumer(rt):
                yield

    app = FastAPI(
        title="bellhook",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # A trailing slash is a 404 that names the route (api.errors), as Stripe's API
        # does, not a redirect built from the Host header.
        redirect_slashes=False,
    )
    app.state.rate_limits = ApiRateLimits.from_settings(settings)
    install_error_handlers(app)
    # Requests are matched against the routes in this order, one pattern after another:
    # ingest, by far the most called, first (with 11 routes before it, matching took 13%
    # of an ingest call's instructions).
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(deliveries.router)
    app.include_router(event_types.router)
    app.include_router(ingest.router)
    app.include_router(health.router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=MAX_BODY_BYTES,
        per_path={"/api/events/batch": MAX_BATCH_BODY_BYTES},
    )
    return app
