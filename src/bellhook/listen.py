"""``bellhook listen``: a local receiver that verifies and shows deliveries.

A development aid: register ``http://127.0.0.1:PORT/`` as a webhook on a bellhook
running in dev mode, and every delivery is checked with ``bellhook.verify`` (the
guide's ``X-Webhook-Signature`` and the Standard Webhooks headers), printed, and
answered 200, or 401 when a signature is wrong or missing. With a forward URL the
verified delivery goes on to the app under development, and its answer goes back
to bellhook unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from rich.console import Console
from rich.json import JSON
from rich.markup import escape

from bellhook.verify import (
    DEFAULT_TOLERANCE,
    InvalidSignature,
    WebhookVerificationError,
    verify_signature,
    verify_standard,
)

__all__ = ["ListenOptions", "Verdict", "check_delivery", "listen"]

X_SIGNATURE = "x-webhook-signature"
STANDARD = "standard-webhooks"
_STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_SCHEME_NAMES = {X_SIGNATURE: "X-Webhook-Signature", STANDARD: "Standard Webhooks"}
_DELIVERY_HEADERS = (
    "X-Webhook-Event",
    "X-Webhook-Id",
    "X-Webhook-Attempt",
    "X-Webhook-Test",
    "webhook-timestamp",
    "User-Agent",
)
# Not passed on to the forward target: the client sets them for its own connection.
_HOP_BY_HOP = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
    }
)
# What the forward target's answer keeps besides its status and body.
_RELAYED_RESPONSE_HEADERS = ("Content-Type", "Retry-After")
FORWARD_TIMEOUT = 30.0
MAX_BODY = 16 * 1024**2


@dataclass(frozen=True)
class ListenOptions:
    secrets: Sequence[str]
    host: str = "127.0.0.1"
    port: int = 4000
    path: str | None = None  # None: every path
    forward_to: str | None = None
    tolerance: int = DEFAULT_TOLERANCE
    json_lines: bool = False


@dataclass
class Verdict:
    """What ``check_delivery`` found: the schemes that passed, or why the delivery fails."""

    verified: list[str] = field(default_factory=list)
    error: str | None = None
    payload: Any = None  # the parsed body, when it is JSON


def check_delivery(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE,
) -> Verdict:
    """Every scheme whose headers the delivery carries must pass, and it must carry one.

    Any of ``secrets`` may match (a rotation in progress); for ``X-Webhook-Signature``
    the ``X-Webhook-Signature-Previous`` header, signed with the old secret during a
    rotation, counts too. Error messages never contain a secret.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    verdict = Verdict()
    carried = False
    if X_SIGNATURE in lowered or "x-webhook-signature-previous" in lowered:
        carried = True
        signatures = [
            value
            for value in (lowered.get(X_SIGNATURE), lowered.get("x-webhook-signature-previous"))
            if value
        ] or [""]  # an empty header: verify_signature says it is missing
        checks = [
            functools.partial(_check_x_signature, body, signature) for signature in signatures
        ]
        problem = _none_passes(checks, secrets)
        if problem is not None:
            verdict.error = problem  # the message names the header
            return verdict
        verdict.verified.append(X_SIGNATURE)
    if any(name in lowered for name in _STANDARD_HEADERS):
        carried = True
        payloads: list[Any] = []

        def standard(secret: str) -> None:
            payloads.append(verify_standard(body, lowered, secret, tolerance))

        problem = _none_passes([standard], secrets)
        if problem is not None:
            verdict.error = f"Standard Webhooks: {problem}"
            return verdict
        verdict.verified.append(STANDARD)
        verdict.payload = payloads[0]
    if not carried:
        verdict.error = (
            "no signature header: expected X-Webhook-Signature or "
            "webhook-id, webhook-timestamp and webhook-signature"
        )
        return verdict
    if verdict.payload is None:
        with contextlib.suppress(ValueError):  # not JSON: shown as text
            verdict.payload = json.loads(body)
    return verdict


def _check_x_signature(body: bytes, signature: str, secret: str) -> None:
    verify_signature(body, signature, secret)


def _none_passes(checks: Sequence[Callable[[str], None]], secrets: Sequence[str]) -> str | None:
    """None if one check passes with one of the secrets, else why the first one failed."""
    failures: list[WebhookVerificationError] = []
    for check in checks:
        for secret in secrets:
            try:
                check(secret)
            except WebhookVerificationError as error:
                failures.append(error)
            else:
                return None
    first = failures[0]
    if isinstance(first, InvalidSignature) and len(secrets) > 1:
        return f"{first} (with any of the {len(secrets)} secrets)"
    return str(first)


@dataclass
class _Outcome:
    status: int
    body: bytes
    headers: dict[str, str]
    forwarded_status: int | None = None
    forward_error: str | None = None


class Listener:
    """The aiohttp app and what it prints."""

    def __init__(self, options: ListenOptions, out: Console) -> None:
        self.options = options
        self.out = out

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.options.path is not None and request.path != self.options.path:
            return _json_response(404, {"ok": False, "error": f"listening on {self.options.path}"})
        if request.method != "POST":
            if not self.options.json_lines:
                self.out.print(
                    f"[dim]{escape(request.method)} {escape(request.path)}: 405, "
                    "deliveries are POSTs[/dim]"
                )
            return _json_response(
                405, {"ok": False, "error": "deliveries are POSTs"}, {"Allow": "POST"}
            )
        body = await request.read()
        verdict = check_delivery(
            body, request.headers, self.options.secrets, self.options.tolerance
        )
        if verdict.error is not None:
            self._show_refusal(request, verdict.error)
            return _json_response(401, {"ok": False, "error": verdict.error})
        if self.options.forward_to is None:
            outcome = _Outcome(200, b'{"ok": true}', {"Content-Type": "application/json"})
        else:
            outcome = await self._forward(request, body)
        self._show_delivery(request, body, verdict, outcome)
        return web.Response(status=outcome.status, body=outcome.body, headers=outcome.headers)

    async def _forward(self, request: web.Request, body: bytes) -> _Outcome:
        assert self.options.forward_to is not None
        target = self.options.forward_to
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _HOP_BY_HOP
        )
        try:
            # A client per forward (aiohttp.request): a dev tool's traffic is light.
            async with aiohttp.request(
                "POST",
                target,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT),
            ) as resp:
                answer = await resp.read()
                relayed = {
                    name: resp.headers[name]
                    for name in _RELAYED_RESPONSE_HEADERS
                    if name in resp.headers
                }
                return _Outcome(resp.status, answer, relayed, forwarded_status=resp.status)
        except TimeoutError:
            message = f"{target} did not answer within {FORWARD_TIMEOUT:.0f} s"
            return _forward_failure(504, message)
        except (aiohttp.ClientError, OSError) as error:
            message = f"could not forward to {target}: {_describe(error)}"
            return _forward_failure(502, message)

    # --- output ----------------------------------------------------------------------

    def _show_refusal(self, request: web.Request, reason: str) -> None:
        if self.options.json_lines:
            self._json_line(
                {
                    # From the headers, unverified: they help find the sender.
                    "event": request.headers.get("X-Webhook-Event"),
                    "id": request.headers.get("X-Webhook-Id") or request.headers.get("webhook-id"),
                    "verified": [],
                    "status": 401,
                    "forwarded_status": None,
                    "error": reason,
                }
            )
            return
        self.out.print(
            f"[bold red]✗ refused POST {escape(request.path)} (401): {escape(reason)}[/bold red]"
        )

    def _show_delivery(
        self, request: web.Request, body: bytes, verdict: Verdict, outcome: _Outcome
    ) -> None:
        payload = verdict.payload
        members = payload if isinstance(payload, dict) else {}
        event = members.get("event", request.headers.get("X-Webhook-Event"))
        event_id = members.get("id", request.headers.get("X-Webhook-Id"))
        if self.options.json_lines:
            line: dict[str, Any] = {
                "event": event,
                "id": event_id,
                "verified": verdict.verified,
                "status": outcome.status,
                "forwarded_status": outcome.forwarded_status,
            }
            if outcome.forward_error is not None:
                line["error"] = outcome.forward_error
            self._json_line(line)
            return
        schemes = ", ".join(_SCHEME_NAMES[s] for s in verdict.verified)
        self.out.print()
        self.out.print(
            f"[bold green]✓ {escape(str(event))}[/bold green] [bold]{escape(str(event_id))}[/bold]"
            f"  POST {escape(request.path)}  [green]verified: {escape(schemes)}[/green]"
        )
        for name in _DELIVERY_HEADERS:
            value = request.headers.get(name)
            if value is not None:
                note = _age(value) if name == "webhook-timestamp" else ""
                self.out.print(f"  [cyan]{name}[/cyan]: {escape(value)}{note}")
        if payload is not None:
            self.out.print(JSON.from_data(payload, indent=2, ensure_ascii=False))
        else:
            self.out.print(escape(body.decode(errors="replace")), highlight=False, soft_wrap=True)
        if outcome.forward_error is not None:
            self.out.print(f"[bold red]→ {outcome.status}: {escape(outcome.forward_error)}[/]")
        elif outcome.forwarded_status is not None:
            colour = "green" if 200 <= outcome.forwarded_status < 300 else "yellow"
            self.out.print(
                f"[{colour}]→ forwarded to {escape(str(self.options.forward_to))}: "
                f"{outcome.forwarded_status}, relayed[/{colour}]"
            )
        else:
            self.out.print("[green]→ 200[/green]")

    def _json_line(self, line: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
        sys.stdout.flush()


def _json_response(
    status: int, data: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _forward_failure(status: int, message: str) -> _Outcome:
    body = json.dumps({"ok": False, "error": message}).encode()
    return _Outcome(status, body, {"Content-Type": "application/json"}, forward_error=message)


def _describe(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):  # without aiohttp's "ssl:default"
        return error.os_error.strerror or str(error.os_error)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _age(timestamp: str) -> str:
    if not (timestamp.isascii() and timestamp.isdigit()):
        return ""
    return f" [dim]({time.time() - int(timestamp):.0f} s ago)[/dim]"


def url_of(host: str, port: int, path: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path or '/'}"


async def listen(options: ListenOptions, out: Console, err: Console) -> None:
    """Serve until SIGINT or SIGTERM: deliveries are shown on ``out``, the rest on ``err``."""
    listener = Listener(options, out)
    runner = web.AppRunner(listener.app(), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host, options.port)
        await site.start()
        port = options.port
        if runner.addresses:  # the real port, for --port 0
            port = int(runner.addresses[0][1])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        url = url_of(options.host, port, options.path)
        err.print(
            f"Listening on {escape(url)} — register it with a webhook in dev mode",
            highlight=False,
            soft_wrap=True,
        )
        if options.forward_to is not None:
            err.print(
                f"Forwarding verified deliveries to {escape(options.forward_to)}",
                highlight=False,
                soft_wrap=True,
            )
        await stop.wait()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
    err.print("stopped", highlight=False, soft_wrap=True)
