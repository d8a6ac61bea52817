"""``bellhook demo``, the real command in a subprocess: every catalog event delivered
and verified with both signature schemes, a failed attempt retried, and its temporary
files gone when it ends (by itself with --once, or on Ctrl-C)."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest

from bellhook.domain.catalog import CATALOG
from tests.support import bellhook_env

pytestmark = pytest.mark.timeout(120)
VERIFIED = "verified (x-webhook-signature + standard-webhooks)"


async def start_demo(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bellhook", "demo", *args,
        env=bellhook_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


def database_of(output: str) -> Path:
    found = re.search(r"database (\S+/demo\.db)", output)
    assert found, output
    return Path(found[1])


async def test_the_demo_shows_every_event_type_verified_and_a_retry() -> None:
    demo = await start_demo("--once")
    out, _ = await asyncio.wait_for(demo.communicate(), 90)
    output = out.decode()
    assert demo.returncode == 0, output
    lines = output.splitlines()
    for event_type in CATALOG:
        assert any(
            line.startswith("✓ /all") and f" {event_type} " in line and VERIFIED in line
            for line in lines
        ), (event_type, output)
    (failed,) = [line for line in lines if line.startswith("✗ /flaky")]
    assert "attempt 1" in failed and "503" in failed
    (retried,) = [line for line in lines if line.startswith("✓ /flaky")]
    assert "attempt 2" in retried and VERIFIED in retried
    assert f"{len(CATALOG) + 1} deliveries: {len(CATALOG)} event types" in output
    assert "refused" not in output and "Traceback" not in output
    assert not database_of(output).parent.exists()  # the temporary files are gone


async def test_ctrl_c_stops_the_demo_and_removes_its_files() -> None:
    demo = await start_demo()
    assert demo.stdout is not None
    seen: list[str] = []
    while not any("Ctrl-C stops the demo" in line for line in seen):
        line = await asyncio.wait_for(demo.stdout.readline(), 90)
        assert line, "".join(seen)
        seen.append(line.decode())
    database = database_of("".join(seen))
    assert database.exists()
    demo.send_signal(signal.SIGINT)
    rest, _ = await asyncio.wait_for(demo.communicate(), 30)
    assert demo.returncode == 0, rest.decode()
    assert "demo stopped" in rest.decode()
    assert not database.parent.exists()


async def test_a_port_in_use_is_one_clear_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = await start_demo("--once", "--port", str(port))
        out, _ = await asyncio.wait_for(demo.communicate(), 60)
    assert demo.returncode == 1
    assert f"cannot serve the demo on 127.0.0.1:{port}" in out.decode()
    assert "Traceback" not in out.decode()
