"""The bench's webhook receiver: a fast aiohttp server on 127.0.0.1 that records arrivals.

Paths are ``/ok/<name>`` (answer 200 at once) and ``/hang/<name>`` (answer only after
``--hang`` seconds, longer than the sender's timeout). Every request is timed with
``time.time()`` on arrival (the load generator uses the same clock) and its signature is
checked against the secret registered for ``<name>``:

* ``bellhook``: ``X-Webhook-Signature`` = hex HMAC-SHA256(secret, body); the event id is
  ``X-Webhook-Id``.
* ``standard``: Standard Webhooks ``v1`` (``webhook-id``/``webhook-timestamp``/
  ``webhook-signature``, key = base64 of the ``whsec_`` secret), what
  django-outbound-webhooks sends; the id is ``webhook-id``.

A request that does not verify is still answered 200 (the sender must not retry it
and skew the run) but is counted and reported as a bad signature.

Control endpoints (the orchestrator's): ``POST /_control/secrets`` ``{name: {scheme,
secret}}``, ``POST /_control/reset``, ``GET /_control/stats``, ``GET /_control/arrivals``.
The process stops by itself after ``--max-seconds``.

    python -m bench.receiver --port 18080
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import signal
import time
from array import array
from collections import Counter
from typing import Any

from aiohttp import web

from bench.common import HOST, run_loop


def standard_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        encoded = secret[len("whsec_") :]
        with contextlib.suppress(binascii.Error, ValueError):
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    return secret.encode()


class Receiver:
    def __init__(self, hang_seconds: float) -> None:
        self.hang_seconds = hang_seconds
        self.keys: dict[str, tuple[str, bytes]] = {}
        self.reset()

    def reset(self) -> None:
        self.times = array("d")
        self.ids: list[str] = []
        self.routes: list[str] = []
        self.bad = 0
        self.bad_examples: list[dict[str, Any]] = []
        self.body_bytes = 0
        self.hanging = 0

    # --- deliveries --------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_control/"):
            return await self.control(request, path[len("/_control/") :])
        body = await request.read()
        arrived = time.time()
        parts = path.split("/", 2)  # "/ok/wh0" -> ["", "ok", "wh0"]
        kind, name = (parts[1], parts[2]) if len(parts) == 3 else ("ok", path)
        event_id, verified = self.verify(name, request.headers, body)
        self.times.append(arrived)
        self.ids.append(event_id)
        self.routes.append(name)
        self.body_bytes += len(body)
        if not verified:
            self.bad += 1
            if len(self.bad_examples) < 5:
                self.bad_examples.append({"route": name, "id": event_id, "bytes": len(body)})
        if kind == "hang":
            self.hanging += 1
            try:
                await asyncio.sleep(self.hang_seconds)
            finally:
                self.hanging -= 1
        return web.Response(status=200)

    def verify(self, name: str, headers: Any, body: bytes) -> tuple[str, bool]:
        scheme, key = self.keys.get(name, ("none", b""))
        if scheme == "bellhook":
            event_id = headers.get("X-Webhook-Id", "")
            expected = hmac.new(key, body, hashlib.sha256).hexdigest()
            return event_id, hmac.compare_digest(expected, headers.get("X-Webhook-Signature", ""))
        if scheme == "standard":
            msg_id = headers.get("webhook-id", "")
            signed = f"{msg_id}.{headers.get('webhook-timestamp', '')}.".encode() + body
            expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            given = [s.partition(",")[2] for s in headers.get("webhook-signature", "").split()]
            return msg_id, any(hmac.compare_digest(expected, g) for g in given)
        return headers.get("X-Webhook-Id", headers.get("webhook-id", "")), False

    # --- control -----------------------------------------------------------------------

    async def control(self, request: web.BaseRequest, action: str) -> web.StreamResponse:
        if action == "secrets" and request.method == "POST":
            for name, spec in (await request.json()).items():
                secret = spec["secret"]
                key = standard_key(secret) if spec["scheme"] == "standard" else secret.encode()
                self.keys[name] = (spec["scheme"], key)
            return web.json_response({"secrets": len(self.keys)})
        if action == "reset" and request.method == "POST":
            self.reset()
            return web.json_response({"reset": True})
        if action == "stats":
            if request.query.get("light"):  # polled often during a run: O(1)
                count = len(self.times)
                first, last = (self.times[0], self.times[-1]) if count else (None, None)
                return web.json_response({"count": count, "first": first, "last": last})
            return web.json_response(self.stats())
        if action == "arrivals":
            return web.Response(
                body=json.dumps(
                    {"ids": self.ids, "routes": self.routes, "times": self.times.tolist()}
                ).encode(),
                content_type="application/json",
            )
        return web.json_response({"error": f"unknown control {action!r}"}, status=404)

    def stats(self) -> dict[str, Any]:
        count = len(self.times)
        return {
            "count": count,
            "unique_ids": len(set(self.ids)),
            # a delivery is (event id, webhook): the same event reaches each webhook once
            "unique_deliveries": len(set(zip(self.ids, self.routes, strict=True))),
            "bad_signatures": self.bad,
            "bad_examples": self.bad_examples,
            "by_route": dict(Counter(self.routes)),
            "first": self.times[0] if count else None,
            "last": self.times[-1] if count else None,
            "body_bytes_mean": self.body_bytes / count if count else 0,
            "hanging_now": self.hanging,
        }


async def serve(port: int, hang_seconds: float, max_seconds: float) -> None:
    receiver = Receiver(hang_seconds)
    server = web.Server(receiver.handle, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, backlog=2048)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"receiver listening on http://{HOST}:{port}", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max_seconds)
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hang", type=float, default=30.0, help="seconds /hang/ waits")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    run_loop(serve(args.port, args.hang, args.max_seconds), args.loop)


if __name__ == "__main__":
    main()
