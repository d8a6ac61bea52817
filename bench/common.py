"""Helpers shared by the bench processes: loopback ports, /proc readings, tiny HTTP calls.

Standard library only, so that every role (orchestrator, receiver, load generator,
ceiling client) can import it. Everything here talks to 127.0.0.1 and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout:g} s")


def assert_loopback(url: str) -> None:
    """The network rule of the bench: every request stays on this machine."""
    host = urllib.request.urlparse(url).hostname
    if host not in (HOST, "localhost"):
        raise ValueError(f"the bench only talks to 127.0.0.1, not {host!r}")


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One JSON request (urllib, no keep-alive): for control calls, never for load."""
    assert_loopback(url)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    return status, (json.loads(raw) if raw else None)


@dataclass(frozen=True)
class ProcSample:
    """CPU seconds (user + system) and resident memory of one process, from /proc."""

    cpu: float
    rss_kb: int
    hwm_kb: int


def proc_sample(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # Field 2 (comm) may contain spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss = hwm = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return ProcSample(cpu=(utime + stime) / CLOCK_TICKS, rss_kb=rss, hwm_kb=hwm)


def machine_busy_seconds() -> float:
    """CPU seconds all processes have used on this machine (user + system + irq...), /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, linear interpolation."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    if math.isinf(sorted_values[high]):  # censored values (never arrived) sort last
        return sorted_values[low] if rank == low else math.inf
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def event_payload(event_id: str, *, content_bytes: int = 160) -> dict[str, Any]:
    """A post.created event of a realistic size (about 300 bytes once delivered)."""
    return {
        "event": "post.created",
        "id": event_id,
        "data": {
            "id": f"post_{event_id}",
            "content": ("Hello, Bellamy Book! " * 20)[:content_bytes],
            "authorId": "user_c4ca4238",
            "visibility": "public",
            "createdAt": "2024-01-01T00:00:00Z",
        },
    }


def run_loop(main: Coroutine[Any, Any, T], loop: str = "uvloop") -> T:
    """Run ``main`` on uvloop (installed with uvicorn[standard]) or on plain asyncio."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
