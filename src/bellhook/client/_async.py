"""``Client``: the bellhook HTTP API from Python, on httpx, one method per route."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from bellhook import __version__
from bellhook.api.schemas import (
    AttemptOutcome,
    BatchOut,
    DeliveryDetail,
    DeliveryOut,
    EventAccepted,
    EventTypeOut,
    Health,
    IngestErrorOut,
    Pagination,
    Ready,
    RecoverOut,
    SecretOut,
    WebhookCreated,
    WebhookOut,
    WebhookStatsOut,
)
from bellhook.client.errors import ApiError, error_from_response, safe_url, transport_error

M = TypeVar("M", bound=pydantic.BaseModel)
T = TypeVar("T")

DeliveryStatus = Literal["pending", "succeeded", "failed"]
WebhookStatus = Literal["active", "disabled"]


class Unset(enum.Enum):
    """The type of ``UNSET``: a field left out of an update (None clears it)."""

    UNSET = "UNSET"


UNSET = Unset.UNSET


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list route; pass ``next_cursor`` back for the next (None: the last)."""

    items: list[T]
    next_cursor: str | None


def _segment(value: str) -> str:
    """An id as one path segment (``/`` or ``..`` in it cannot reach another route)."""
    return quote(value, safe="")


class InvalidUrl(ValueError):
    """The service's URL cannot be called (raised when the client is made)."""


def _check_url(base_url: str) -> None:
    try:
        url = httpx.URL(base_url)
        port = url.port
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidUrl(f"{base_url!r} is not a valid URL ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidUrl(f"{base_url!r} is not an http:// or https:// URL with a host")
    if port is not None and not 0 < port < 65536:
        raise InvalidUrl(f"{base_url!r} has no valid port (1 to 65535)")


def _check_key(api_key: str | None) -> None:
    # Checked here so that httpx never builds an error message around the key.
    if api_key is not None and (not api_key or not all("\x21" <= ch <= "\x7e" for ch in api_key)):
        raise ValueError("api_key must be printable ASCII without spaces")


class Client:
    """The bellhook API, asynchronously::

        async with Client("http://127.0.0.1:8080", api_key) as client:
            hook = await client.create_webhook("https://example.com/hook", ["post.created"])
            async for delivery in client.list_deliveries(hook.id, status="failed"):
                ...

    Every failed call raises an ``ApiError`` (``bellhook.client.errors``); list routes
    are async iterators over every page, or one page at a time with ``*_page``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 30,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        _check_key(api_key)
        _check_url(base_url)
        headers = {"User-Agent": f"bellhook-client/{__version__}", "Accept": "application/json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({safe_url(httpx.URL(self.base_url))!r})"

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- transport --------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        request = self._http.build_request(
            method, path, json=json, params=query or None, headers=headers
        )
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(exc, method, request.url) from exc
        if not response.is_success:
            raise error_from_response(response)
        return response

    async def _body(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("success") is not True:
            raise ApiError(
                response.status_code,
                "invalid_response",
                f"{method} {path} did not answer a success envelope",
            )
        return body

    async def _one(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        body = await self._body(method, path, **kwargs)
        return _parse(model, body.get("data"), path)

    async def _page(self, model: type[M], path: str, params: Mapping[str, Any]) -> Page[M]:
        body = await self._body("GET", path, params=params)
        data = body.get("data")
        if not isinstance(data, list):
            raise ApiError(None, "invalid_response", f"GET {path} did not answer a list")
        pagination = _parse(Pagination, body.get("pagination") or {"nextCursor": None}, path)
        return Page([_parse(model, item, path) for item in data], pagination.next_cursor)

    async def _all(self, model: type[M], path: str, params: Mapping[str, Any]) -> AsyncIterator[M]:
        cursor: str | None = None
        while True:
            page = await self._page(model, path, {**params, "cursor": cursor})
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # --- webhooks ---------------------------------------------------------------------

    def list_webhooks(self, *, limit: int | None = None) -> AsyncIterator[WebhookOut]:
        """Every webhook of the key's owner, newest first (``limit`` per page)."""
        return self._all(WebhookOut, "/api/webhooks", {"limit": limit})

    async def list_webhooks_page(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[WebhookOut]:
        return await self._page(WebhookOut, "/api/webhooks", {"limit": limit, "cursor": cursor})

    async def get_webhook(self, webhook_id: str) -> WebhookOut:
        return await self._one(WebhookOut, "GET", f"/api/webhooks/{_segment(webhook_id)}")

    async def create_webhook(
        self,
        url: str,
        events: Sequence[str],
        *,
        secret: str | None = None,
        description: str | None = None,
    ) -> WebhookCreated:
        """Register a webhook; without ``secret`` one is generated and returned this once."""
        body: dict[str, Any] = {"url": url, "events": list(events)}
        if secret is not None:
            body["secret"] = secret
        if description is not None:
            body["description"] = description
        return await self._one(WebhookCreated, "POST", "/api/webhooks", json=body)

    async def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | Unset | None = UNSET,
        status: WebhookStatus | None = None,
        method: Literal["PATCH", "PUT"] = "PATCH",
    ) -> WebhookOut:
        """Change only the fields given (``description=None`` clears it). The API
        answers PUT and PATCH alike; ``method`` picks the one sent."""
        body: dict[str, Any] = {}
        if url is not None:
            body["url"] = url
        if events is not None:
            body["events"] = list(events)
        if description is not UNSET:
            body["description"] = description
        if status is not None:
            body["status"] = status
        path = f"/api/webhooks/{_segment(webhook_id)}"
        return await self._one(WebhookOut, method, path, json=body)

    async def delete_webhook(self, webhook_id: str) -> None:
        await self._body("DELETE", f"/api/webhooks/{_segment(webhook_id)}")

    async def test_webhook(self, webhook_id: str, event: str = "post.created") -> AttemptOutcome:
        """Send a signed sample ``event`` now; the attempt's outcome."""
        path = f"/api/webhooks/{_segment(webhook_id)}/test"
        return await self._one(AttemptOutcome, "POST", path, json={"event": event})

    async def get_secret(self, webhook_id: str) -> SecretOut:
        path = f"/api/webhooks/{_segment(webhook_id)}/secret"
        return await self._one(SecretOut, "GET", path)

    async def rotate_secret(
        self, webhook_id: str, *, secret: str | None = None, grace_seconds: int | None = None
    ) -> SecretOut:
        """A new signing secret (generated without ``secret``); the old one signs beside
        it for ``grace_seconds`` (the API's default: a day)."""
        body: dict[str, Any] = {}
        if secret is not None:
            body["secret"] = secret
        if grace_seconds is not None:
            body["graceSeconds"] = grace_seconds
        path = f"/api/webhooks/{_segment(webhook_id)}/secret/rotate"
        return await self._one(SecretOut, "POST", path, json=body)

    async def webhook_stats(self, webhook_id: str) -> WebhookStatsOut:
        path = f"/api/webhooks/{_segment(webhook_id)}/stats"
        return await self._one(WebhookStatsOut, "GET", path)

    # --- deliveries -------------------------------------------------------------------

    def list_deliveries(
        self,
        webhook_id: str,
        *,
        status: DeliveryStatus | None = None,
        event: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[DeliveryOut]:
        """The webhook's delivery log, newest first, optionally by status or event type."""
        path = f"/api/webhooks/{_segment(webhook_id)}/deliveries"
        return self._all(DeliveryOut, path, {"status": status, "event": event, "limit": limit})

    async def list_deliveries_page(
        self,
        webhook_id: str,
        *,
        status: DeliveryStatus | None = None,
        event: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[DeliveryOut]:
        path = f"/api/webhooks/{_segment(webhook_id)}/deliveries"
        params = {"status": status, "event": event, "limit": limit, "cursor": cursor}
        return await self._page(DeliveryOut, path, params)

    async def get_delivery(self, webhook_id: str, delivery_id: str) -> DeliveryDetail:
        """One delivery with every attempt."""
        path = f"/api/webhooks/{_segment(webhook_id)}/deliveries/{_segment(delivery_id)}"
        return await self._one(DeliveryDetail, "GET", path)

    async def retry_delivery(self, webhook_id: str, delivery_id: str) -> AttemptOutcome:
        """Send a delivery again now (its retry schedule is not consumed)."""
        path = f"/api/webhooks/{_segment(webhook_id)}/deliveries/{_segment(delivery_id)}/retry"
        return await self._one(AttemptOutcome, "POST", path)

    async def recover(self, webhook_id: str, since: datetime) -> RecoverOut:
        """Resend every failed delivery created since ``since`` (naive: UTC)."""
        path = f"/api/webhooks/{_segment(webhook_id)}/recover"
        return await self._one(RecoverOut, "POST", path, json={"since": since.isoformat()})

    # --- events (admin keys) ----------------------------------------------------------

    async def publish(
        self,
        event: str,
        data: Mapping[str, Any],
        *,
        event_id: str | None = None,
        timestamp: datetime | None = None,
        audience: Sequence[str] | Literal["*"] | None = None,
        idempotency_key: str | None = None,
    ) -> EventAccepted:
        """Publish one event (admin keys). Publishing the same ``event_id`` (or
        ``idempotency_key``) again is a no-op answered with ``duplicate=True``."""
        body = _event_body(event, data, event_id, timestamp, audience)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        return await self._one(EventAccepted, "POST", "/api/events", json=body, headers=headers)

    async def publish_batch(self, events: Sequence[Mapping[str, Any]]) -> BatchOut:
        """Publish up to 1,000 events (each ``{event, data, id?, timestamp?, audience?}``);
        a refused one is reported at its index in ``results``, the others are accepted."""
        body = {"events": [dict(e) for e in events]}
        return await self._one(BatchOut, "POST", "/api/events/batch", json=body)

    async def event_types(self) -> list[EventTypeOut]:
        """The catalog of event types a webhook can subscribe to."""
        page = await self._page(EventTypeOut, "/api/event-types", {})
        return page.items

    def list_ingest_errors(self, *, limit: int | None = None) -> AsyncIterator[IngestErrorOut]:
        """Kafka messages that could not be accepted, newest first (admin keys)."""
        return self._all(IngestErrorOut, "/api/ingest/errors", {"limit": limit})

    async def list_ingest_errors_page(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[IngestErrorOut]:
        params = {"limit": limit, "cursor": cursor}
        return await self._page(IngestErrorOut, "/api/ingest/errors", params)

    # --- operations -------------------------------------------------------------------

    async def healthz(self) -> Health:
        """Up, and the database answers (else ``ServiceUnavailableError``)."""
        return await self._one(Health, "GET", "/healthz")

    async def readyz(self) -> Ready:
        """Ready for traffic (else ``ServiceUnavailableError`` saying what is not)."""
        return await self._one(Ready, "GET", "/readyz")

    async def metrics(self, token: str | None = None) -> str:
        """The Prometheus metrics text; ``token`` is BELLHOOK_METRICS_TOKEN when set."""
        _check_key(token)
        headers = {"Authorization": f"Bearer {token}"} if token is not None else None
        return (await self._request("GET", "/metrics", headers=headers)).text


def _parse(model: type[M], data: Any, path: str) -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ApiError(
            None,
            "invalid_response",
            f"{path} answered data that is not a {model.__name__} ({exc.error_count()} errors)",
        ) from exc


def _event_body(
    event: str,
    data: Mapping[str, Any],
    event_id: str | None,
    timestamp: datetime | None,
    audience: Sequence[str] | Literal["*"] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"event": event, "data": dict(data)}
    if event_id is not None:
        body["id"] = event_id
    if timestamp is not None:
        body["timestamp"] = timestamp.isoformat()
    if audience is not None:
        body["audience"] = audience if audience == "*" else list(audience)
    return body
