"""The physical limit: a bare aiohttp client loop against the same receiver.

What bellhook's worker does per delivery minus everything that is bellhook: the same
body size and signatures (the payload's ``signature`` member, ``X-Webhook-Signature``
and the Standard Webhooks ``webhook-signature``: three HMACs), one keep-alive
``ClientSession``, the same number of requests in flight, no database, no logging.

    python -m bench.ceiling --targets '[["http://127.0.0.1:18080/ok/wh0", "secret"]]' \\
        --n 20000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp

from bench.common import assert_loopback, event_payload, run_loop


def signed_request(
    event_id: str, secret: bytes, data_json: str, now: int
) -> tuple[bytes, dict[str, str]]:
    prefix = (
        f'{{"id":{json.dumps(event_id)},"event":"post.created",'
        f'"timestamp":"2024-01-01T00:00:00.000Z","data":{data_json}'
    ).encode()
    member = hmac.new(secret, prefix + b"}", hashlib.sha256).hexdigest()
    body = b"".join((prefix, b',"signature":"', member.encode(), b'"}'))
    standard = hmac.new(secret, f"{event_id}.{now}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Event": "post.created",
        "X-Webhook-Id": event_id,
        "X-Webhook-Attempt": "1",
        "X-Webhook-Signature": hmac.new(secret, body, hashlib.sha256).hexdigest(),
        "webhook-id": event_id,
        "webhook-timestamp": str(now),
        "webhook-signature": "v1," + base64.b64encode(standard).decode(),
    }
    return body, headers


async def blast(
    targets: list[tuple[str, bytes]], n: int, concurrency: int, prefix: str, content_bytes: int
) -> dict[str, Any]:
    data_json = json.dumps(
        event_payload("x", content_bytes=content_bytes)["data"], separators=(",", ":")
    )
    next_index = 0
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=15)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index, errors
        while next_index < n:
            i = next_index
            next_index += 1
            url, secret = targets[i % len(targets)]
            body, headers = signed_request(f"{prefix}{i}", secret, data_json, int(time.time()))
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {"sent": n, "errors": errors, "elapsed": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", required=True, help="JSON list of [url, secret]")
    parser.add_argument("--n", type=int, required=True, help="requests in all (bounded)")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--prefix", default="ceil-")
    parser.add_argument("--content-bytes", type=int, default=160)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="asyncio")
    args = parser.parse_args()
    targets = [(url, secret.encode()) for url, secret in json.loads(args.targets)]
    for url, _ in targets:
        assert_loopback(url)
    result = run_loop(
        blast(targets, args.n, args.concurrency, args.prefix, args.content_bytes), args.loop
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
