"""The load generator: publishes events to a bellhook API on 127.0.0.1.

Three modes, each bounded in count and time, each printing one JSON result line:

* ``batch``: ``--n`` events through ``POST /api/events/batch`` (``--batch`` a call,
  ``--concurrency`` calls in flight);
* ``single``: ``--n`` events through ``POST /api/events``, ``--concurrency`` in flight,
  stopping after ``--duration`` seconds at the latest;
* ``steady``: ``--rate`` events a second for ``--duration`` seconds (open loop: each
  event leaves at its scheduled time whatever happened to the previous ones), writing
  every event's send time and the ``time.time()`` its 202 came back to ``--out``.

Request bodies are serialized before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp

from bench.common import assert_loopback, event_payload, run_loop

JSON = {"Content-Type": "application/json"}


def session(concurrency: int, key: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=120),
        headers={"Authorization": f"Bearer {key}", **JSON},
    )


async def batch(
    url: str, key: str, n: int, size: int, concurrency: int, prefix: str
) -> dict[str, Any]:
    bodies = [
        json.dumps(
            {"events": [event_payload(f"{prefix}{i}") for i in range(start, min(start + size, n))]}
        ).encode()
        for start in range(0, n, size)
    ]
    accepted = rejected = failed_calls = 0
    queue = list(reversed(bodies))

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal accepted, rejected, failed_calls
        while queue:
            body = queue.pop()
            async with http.post(f"{url}/api/events/batch", data=body) as response:
                answer = await response.json()
                if response.status != 202:
                    failed_calls += 1
                    continue
                accepted += answer["data"]["accepted"]
                rejected += answer["data"]["rejected"]

    async with session(concurrency, key) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "mode": "batch",
        "events": n,
        "batch": size,
        "concurrency": concurrency,
        "accepted": accepted,
        "rejected": rejected,
        "failed_calls": failed_calls,
        "elapsed": elapsed,
        "events_per_s": accepted / elapsed if elapsed else 0.0,
    }


async def single(
    url: str, key: str, n: int, concurrency: int, duration: float, prefix: str
) -> dict[str, Any]:
    bodies = [json.dumps(event_payload(f"{prefix}{i}")).encode() for i in range(n)]
    accepted = failed = 0
    next_index = 0
    latencies: list[float] = []

    async def worker(http: aiohttp.ClientSession, deadline: float) -> None:
        nonlocal accepted, failed, next_index
        while next_index < n and time.perf_counter() < deadline:
            body = bodies[next_index]
            next_index += 1
            sent = time.perf_counter()
            async with http.post(f"{url}/api/events", data=body) as response:
                await response.read()
                if response.status == 202:
                    accepted += 1
                    latencies.append(time.perf_counter() - sent)
                else:
                    failed += 1

    async with session(concurrency, key) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http, started + duration) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "mode": "single",
        "concurrency": concurrency,
        "accepted": accepted,
        "failed": failed,
        "elapsed": elapsed,
        "events_per_s": accepted / elapsed if elapsed else 0.0,
        "response_ms_p50": latencies[len(latencies) // 2] * 1000 if latencies else None,
        "response_ms_p99": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None,
    }


async def steady(
    url: str, key: str, rate: float, duration: float, prefix: str, out: str
) -> dict[str, Any]:
    n = int(rate * duration)
    bodies = [json.dumps(event_payload(f"{prefix}{i}")).encode() for i in range(n)]
    sent = [0.0] * n
    accepted = [0.0] * n
    status = [0] * n
    tasks: set[asyncio.Task[None]] = set()
    max_in_flight = 0

    async def post(http: aiohttp.ClientSession, i: int) -> None:
        sent[i] = time.time()
        try:
            async with http.post(f"{url}/api/events", data=bodies[i]) as response:
                accepted[i] = time.time()
                status[i] = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            status[i] = -1

    loop = asyncio.get_running_loop()
    async with session(512, key) as http:
        start = loop.time()
        for i in range(n):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(post(http, i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            max_in_flight = max(max_in_flight, len(tasks))
        if tasks:
            await asyncio.wait(set(tasks), timeout=20)
        elapsed = loop.time() - start
    ids = [f"{prefix}{i}" for i in range(n)]
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"ids": ids, "sent": sent, "accepted": accepted, "status": status}, f)
    ok = sum(1 for s in status if s == 202)
    return {
        "mode": "steady",
        "rate": rate,
        "duration": duration,
        "events": n,
        "accepted": ok,
        "failed": n - ok,
        "elapsed": elapsed,
        "max_in_flight": max_in_flight,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("batch", "single", "steady"))
    parser.add_argument("--url", required=True, help="bellhook's base URL (127.0.0.1)")
    parser.add_argument("--key", required=True, help="an admin API key")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--prefix", default="evt-")
    parser.add_argument("--out", default="steady.json")
    args = parser.parse_args()
    assert_loopback(args.url)
    if args.mode == "batch":
        work = batch(args.url, args.key, args.n, args.batch, args.concurrency, args.prefix)
    elif args.mode == "single":
        work = single(args.url, args.key, args.n, args.concurrency, args.duration, args.prefix)
    else:
        work = steady(args.url, args.key, args.rate, args.duration, args.prefix, args.out)
    print(json.dumps(run_loop(work)), flush=True)


if __name__ == "__main__":
    main()
