"""The machine: its description in the results, the load other processes put on it,
and the harness's log lines."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import resource
import subprocess
import time
from typing import Any

from bench.common import (
    machine_busy_seconds,
)
from bench.config import ROOT


class Noise:
    """CPU used on this machine by processes that are not the bench's, over a span.

    The machine's busy time (/proc/stat) minus the bench's own (this process and every
    child it has reaped: each scenario stops all of its processes before it ends).
    """

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.busy = machine_busy_seconds()
        self.mine = self._mine()

    @staticmethod
    def _mine() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def cores(self) -> float:
        """Average number of cores the rest of the machine kept busy since the start."""
        wall = time.monotonic() - self.wall
        foreign = (machine_busy_seconds() - self.busy) - (self._mine() - self.mine)
        return max(foreign, 0.0) / wall if wall > 0 else 0.0


def wait_for_quiet(limit: float, *, threshold: float = 0.15, window: float = 1.0) -> float:
    """Wait (up to ``limit`` s) for a ``window`` in which others use < ``threshold`` cores."""
    deadline = time.monotonic() + limit
    while True:
        noise = Noise()
        time.sleep(window)
        load = noise.cores()
        if load < threshold or time.monotonic() > deadline:
            return load


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False
        ).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", *argv], capture_output=True, text=True, cwd=ROOT, check=False
        ).stdout.strip()

    # Others may be editing the tree: say which code was measured.
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git": git("rev-parse", "--short", "HEAD"),
        "niceness": os.getpriority(os.PRIO_PROCESS, 0),
        "src_changed_since_commit": dirty,
    }
