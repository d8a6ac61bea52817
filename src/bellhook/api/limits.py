"""Request body size limit, as a pure ASGI middleware.

Starlette has no body limit of its own and uvicorn has none either; this one also
covers chunked bodies without a Content-Length, and answers 413 in the API's envelope.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bellhook.api.errors import TOO_LARGE, count_refusal, error_response


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int, per_path: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_max = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.per_path.get(scope["path"], self.default_max)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_large = int(value) > max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    await _reject(scope, receive, send, max_bytes)
                    return
        received = 0
        exceeded = False  # the body went over the limit: whatever the app answers becomes 413
        answered = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    exceeded = True
                    scope[TOO_LARGE] = True  # counted once, as payload_too_large (api.errors)
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if exceeded:
                # FastAPI turns an error while reading the body into its own 400; the
                # client must learn the real reason instead.
                if message["type"] == "http.response.start" and not answered:
                    answered = True
                    await _reject(scope, receive, send, max_bytes)
                return
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not answered:
                await _reject(scope, receive, send, max_bytes)


async def _reject(scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
    if "app" in scope:
        count_refusal(scope["app"], scope["path"], scope["method"], "payload_too_large")
    response = error_response(
        413,
        "payload_too_large",
        f"the request body is larger than {max_bytes} bytes",
        [{"limit": max_bytes}],
        headers={"Connection": "close"},  # the rest of the body is not read
    )
    await response(scope, receive, send)
