"""``bellhook worker --processes N``: N delivery processes sharing one database.

One Python process delivers on one core; the dispatcher's claims (leases, with
``SKIP LOCKED`` on PostgreSQL and serialized writers on SQLite) already let many
processes share a queue. This module starts N copies of ``bellhook worker`` and
splits the concurrency limits between them, so that ``max_concurrency`` and
``per_webhook_concurrency`` keep meaning what they say for the worker as a whole.

It forwards SIGTERM and SIGINT (each child drains its in-flight deliveries), and
stops them all if one exits on its own: a half-running worker would be a quieter
failure than a stopped one, which the process manager (systemd, Kubernetes)
restarts. The standard library does this in a few lines; a supervisor package
would bring a configuration language along.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
from collections.abc import Mapping, Sequence

import structlog

from bellhook.config import Settings

log = structlog.get_logger("bellhook.worker")


def share_of(limit: int, processes: int) -> int:
    """Each process's part of a limit (rounded up: never 0, never much over the whole)."""
    return max(1, math.ceil(limit / processes))


def child_environment(
    settings: Settings, processes: int, base: Mapping[str, str]
) -> dict[str, str]:
    """The environment of one child: the parent's, with its settings and its share."""
    env = dict(base)
    env.update(
        {
            "BELLHOOK_DATABASE_URL": settings.database_url,
            "BELLHOOK_DEV_MODE": "true" if settings.dev_mode else "false",
            "BELLHOOK_LOG_LEVEL": settings.log_level,
            "BELLHOOK_WORKER_PROCESSES": "1",
            "BELLHOOK_MAX_CONCURRENCY": str(share_of(settings.max_concurrency, processes)),
            "BELLHOOK_PER_WEBHOOK_CONCURRENCY": str(
                share_of(settings.per_webhook_concurrency, processes)
            ),
        }
    )
    return env


async def supervise(settings: Settings, argv: Sequence[str] | None = None) -> int:
    """Run ``settings.worker_processes`` workers until a signal; 0 if all stopped cleanly."""
    processes = settings.worker_processes
    command = list(argv or (sys.executable, "-m", "bellhook", "worker"))
    env = child_environment(settings, processes, os.environ)
    children = [await asyncio.create_subprocess_exec(*command, env=env) for _ in range(processes)]
    log.info(
        "worker.processes_started",
        processes=processes,
        pids=[c.pid for c in children],
        max_concurrency_each=env["BELLHOOK_MAX_CONCURRENCY"],
        per_webhook_each=env["BELLHOOK_PER_WEBHOOK_CONCURRENCY"],
    )
    stopping = asyncio.Event()

    def stop_all(sig: int = signal.SIGTERM) -> None:
        stopping.set()
        for child in children:
            if child.returncode is None:
                child.send_signal(sig)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all, sig)
    waits = {asyncio.ensure_future(c.wait()): c for c in children}
    pending = set(waits)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.is_set():
            for task in done:
                child = waits[task]
                log.error("worker.process_exited", pid=child.pid, status=child.returncode)
            stop_all()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    statuses = [c.returncode for c in children]
    log.info("worker.processes_stopped", statuses=statuses)
    return 0 if all(s == 0 for s in statuses) else 1
