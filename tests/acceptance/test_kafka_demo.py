"""`make kafka-demo` (examples/kafka_demo.py) end to end: two events produced to a local
broker arrive at the demo's receiver, signed. Run in the SQLite pass only: the demo makes
its own SQLite file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_DATABASE_URL
from tests.support import bellhook_env

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(bool(TEST_DATABASE_URL), reason="the demo uses SQLite only"),
    pytest.mark.timeout(240),
]


def test_the_kafka_demo_delivers_both_events_signed() -> None:
    done = subprocess.run(
        [sys.executable, "examples/kafka_demo.py"],
        cwd=ROOT,
        env=bellhook_env(),
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("delivered (signature valid):") == 2, done.stdout
    assert '"id": "demo-post-1"' in done.stdout and '"id": "demo-user-1"' in done.stdout
