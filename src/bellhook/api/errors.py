"""One table from errors to HTTP statuses, and the handlers that write the error envelope."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from bellhook import errors
from bellhook.api.deps import authenticate_early
from bellhook.ingest.intake import validation_details, validation_summary

log = logging.getLogger("bellhook.api")
Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]

STATUS_OF: dict[type[errors.BellhookError], int] = {
    errors.InvalidInput: 422,
    errors.LimitExceeded: 422,
    errors.NotFound: 404,
    errors.AuthenticationFailed: 401,
    errors.PermissionDenied: 403,
    errors.RateLimited: 429,
    errors.StorageUnavailable: 503,
    errors.ConfigurationError: 500,
}

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def status_of(exc: errors.BellhookError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


def error_response(
    status: int,
    code: str,
    message: str,
    details: Sequence[dict[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"success": False, "error": {"code": code, "message": message, "details": list(details)}}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


async def _on_bellhook_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.BellhookError)
    status = status_of(exc)
    headers = None
    if isinstance(exc, errors.RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, errors.AuthenticationFailed):
        headers = {"WWW-Authenticate": "Bearer"}
    if status >= 500:
        log.error("api.error", extra={"code": exc.code, "path": request.url.path})
    return error_response(status, exc.code, exc.message, exc.details, headers)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    content_type = request.headers.get("content-type", "")
    if (
        request.method in ("POST", "PUT", "PATCH")
        and "json" not in content_type
        and any(d["field"] == "body" for d in details)
    ):
        return error_response(
            415,
            "unsupported_media_type",
            "send the request body as JSON with Content-Type: application/json",
        )
    if any(d["type"] == "json_invalid" for d in details):
        # FastAPI parses the JSON before any dependency runs: a caller without a valid
        # key (or, on admin routes, an admin key) hears that first, as for other bodies.
        try:
            await authenticate_early(request)
        except errors.BellhookError as refused:
            return await _on_bellhook_error(request, refused)
        return error_response(400, "malformed_json", "the request body is not valid JSON", details)
    return error_response(422, "validation_error", validation_summary(details), details)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = exc.headers
    path = request.url.path
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {path}"
        # No redirect for a trailing slash (create_app): a 307 to a URL built from the
        # Host header can point past a TLS-terminating proxy. Name the route instead.
        bare = path.rstrip("/")
        if bare != path and bare and request.method in _methods_at(request, bare):
            message += f"; did you mean {bare} (without the trailing slash)?"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {path}"
        # Starlette's Allow names the methods of the first route that matched the path
        # only; a path served by several routes (GET and POST) allows all of theirs.
        headers = {**(headers or {}), "Allow": ", ".join(sorted(_methods_at(request, path)))}
    return error_response(exc.status_code, code, message, headers=headers)


def _methods_at(request: Request, path: str) -> set[str]:
    """The methods that some route serves at ``path``: asked of each route through
    ``matches`` (a full match is path and method), which also sees into the routers
    FastAPI nests."""
    return {
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "path": path, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    }


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("api.unhandled_error", extra={"path": request.url.path})
    return error_response(
        500, "internal_error", "bellhook hit an unexpected error; it has been logged"
    )


TOO_LARGE = "bellhook.body_too_large"  # set in the scope by api.limits
# The ingest routes, by the source their refusals count under (bellhook_events_rejected).
INGEST_SOURCES = {"/api/events": "http", "/api/events/batch": "batch"}


def count_refusal(app: Any, path: str, method: str, code: str) -> None:
    """Count an ingest call refused as a whole (a batch's single events are counted by
    its route)."""
    source = INGEST_SOURCES.get(path)
    runtime = getattr(app.state, "runtime", None)
    if source is not None and method == "POST" and runtime is not None:
        runtime.metrics.rejected_events(source, (code,))
        log.info("ingest.refused", extra={"source": source, "code": code})


def _counted(handler: Handler) -> Handler:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        response = await handler(request, exc)
        if (
            400 <= response.status_code < 500
            and request.url.path in INGEST_SOURCES
            and not request.scope.get(TOO_LARGE)  # answered (and counted) as a 413 instead
        ):
            code = json.loads(bytes(response.body))["error"]["code"]
            count_refusal(request.app, request.url.path, request.method, code)
        return response

    return handle


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.BellhookError, _counted(_on_bellhook_error))
    app.add_exception_handler(RequestValidationError, _counted(_on_validation_error))
    app.add_exception_handler(StarletteHTTPException, _counted(_on_http_error))
    app.add_exception_handler(Exception, _on_unexpected)
