"""``bellhook worker --processes N``: N delivery processes sharing one database.

One Python process delivers on one core; the dispatcher's claims (leases, with
``SKIP LOCKED`` on PostgreSQL and serialized writers on SQLite) already let many
processes share a queue. This module starts N copies of ``bellhook worker`` and
splits the concurrency limits between them, so that ``max_concurrency`` and
``per_webhook_concurrency`` keep meaning what they say for the worker as a whole.

It forwards SIGTERM and SIGINT (each child drains its in-flight deliveries), and
stops them all, exiting with status 1, if one exits on its own: a half-running
worker would be a quieter failure than a stopped one, which the process manager
(systemd, Kubernetes) restarts. The standard library does this in a few lines; a supervisor package
would bring a configuration language along.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import structlog
from prometheus_client import multiprocess

from bellhook.config import Settings
from bellhook.errors import ConfigurationError
from bellhook.observability.metrics import MULTIPROCESS_ENV, multiprocess_registry
from bellhook.runtime import Runtime

log = structlog.get_logger("bellhook.worker")
# Where metrics go is the parent's to say, and the metrics port is the parent's.
_NOT_INHERITED = (MULTIPROCESS_ENV, MULTIPROCESS_ENV.lower(), "BELLHOOK_METRICS_PORT")


def shares_of(limit: int, processes: int) -> list[int]:
    """A limit split between processes: the shares add up to it, and none is 0."""
    if limit < processes:
        raise ConfigurationError(
            f"a limit of {limit} cannot be split between {processes} worker processes: "
            "use fewer processes or raise the limit"
        )
    base, extra = divmod(limit, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def child_environments(
    settings: Settings, processes: int, base: Mapping[str, str], metrics_dir: str | None = None
) -> list[dict[str, str]]:
    """Each child's environment: the parent's, with its settings and its share; with
    ``metrics_dir``, where its metrics go for the parent to sum (the parent serves the
    metrics port, not the children)."""
    everything = shares_of(settings.max_concurrency, processes)
    per_webhook = shares_of(settings.per_webhook_concurrency, processes)
    envs = []
    for total, each in zip(everything, per_webhook, strict=True):
        env = {
            k: v for k, v in base.items() if k not in (MULTIPROCESS_ENV, "BELLHOOK_METRICS_PORT")
        }
        if metrics_dir is not None:
            env[MULTIPROCESS_ENV] = metrics_dir
        env.update(
            {
                "BELLHOOK_DATABASE_URL": settings.database_url,
                "BELLHOOK_DEV_MODE": "true" if settings.dev_mode else "false",
                "BELLHOOK_LOG_LEVEL": settings.log_level,
                "BELLHOOK_WORKER_PROCESSES": "1",
                "BELLHOOK_MAX_CONCURRENCY": str(total),
                "BELLHOOK_PER_WEBHOOK_CONCURRENCY": str(each),
            }
        )
        envs.append(env)
    return envs


async def supervise(settings: Settings, rt: Runtime, argv: Sequence[str] | None = None) -> int:
    """Run ``settings.worker_processes`` workers until a signal; 0 if all stopped cleanly
    after one, 1 if any failed or stopped on its own. With a metrics port, this process
    serves it, summing the children's metrics."""
    if settings.metrics_port is None:
        return await _supervise(settings, rt, argv, None)
    try:
        directory = tempfile.TemporaryDirectory(prefix="bellhook-metrics-")
    except OSError as exc:
        raise ConfigurationError(
            f"no directory for the worker processes' metrics: {exc.strerror or exc} "
            "(set TMPDIR to a writable directory)"
        ) from exc
    rt.components["dispatcher"] = lambda: "starting the worker processes"
    with directory as metrics_dir:
        # The port first: when it cannot be served, no child has started.
        async with _metrics_port(rt, metrics_dir):
            return await _supervise(settings, rt, argv, metrics_dir)


async def _supervise(
    settings: Settings, rt: Runtime, argv: Sequence[str] | None, metrics_dir: str | None
) -> int:
    processes = settings.worker_processes
    command = list(argv or (sys.executable, "-m", "bellhook", "worker"))
    envs = child_environments(settings, processes, os.environ, metrics_dir)
    children: list[asyncio.subprocess.Process] = []
    rt.components["dispatcher"] = lambda: _children_state(children, processes)
    stopping = asyncio.Event()
    stop_signal = signal.SIGTERM

    def stop_all(sig: int = signal.SIGTERM) -> None:
        nonlocal stop_signal
        stop_signal = signal.Signals(sig)
        stopping.set()
        for child in children:
            if child.returncode is None:
                child.send_signal(sig)

    # Handlers first: a signal while the children start must reach them too.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all, sig)
    try:
        try:
            for env in envs:
                children.append(await asyncio.create_subprocess_exec(*command, env=env))
                if stopping.is_set():
                    children[-1].send_signal(stop_signal)
        except BaseException:
            stop_all()  # the ones that did start must not run on as orphans
            await asyncio.gather(*(c.wait() for c in children), return_exceptions=True)
            raise
        log.info(
            "worker.processes_started",
            processes=processes,
            pids=[c.pid for c in children],
            max_concurrency_each=[int(e["BELLHOOK_MAX_CONCURRENCY"]) for e in envs],
            per_webhook_each=[int(e["BELLHOOK_PER_WEBHOOK_CONCURRENCY"]) for e in envs],
        )
        unprompted = await _watch(children, stopping, stop_all, metrics_dir)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    statuses = [c.returncode for c in children]
    log.info("worker.processes_stopped", statuses=statuses)
    return 1 if unprompted or any(s != 0 for s in statuses) else 0


async def _watch(
    children: list[asyncio.subprocess.Process],
    stopping: asyncio.Event,
    stop_all: Callable[[], None],
    metrics_dir: str | None,
) -> bool:
    """Wait for every child to exit; True if one exited unprompted."""
    unprompted = False
    waits = {asyncio.ensure_future(c.wait()): c for c in children}
    pending = set(waits)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            child = waits[task]
            if metrics_dir is not None:  # its live gauges are no longer summed
                multiprocess.mark_process_dead(child.pid, metrics_dir)  # type: ignore[no-untyped-call]
            if not stopping.is_set():
                log.error("worker.process_exited", pid=child.pid, status=child.returncode)
        if done and not stopping.is_set():
            unprompted = True
            stop_all()
    return unprompted


def _children_state(children: list[asyncio.subprocess.Process], processes: int) -> str:
    """For /readyz: ``ok`` while every worker process runs."""
    running = sum(1 for c in children if c.returncode is None)
    if running == processes:
        return "ok"
    return f"{running} of {processes} worker processes running"


@contextlib.asynccontextmanager
async def _metrics_port(rt: Runtime, metrics_dir: str | None) -> AsyncIterator[None]:
    if metrics_dir is None or rt.settings.metrics_port is None:
        yield
        return
    from bellhook.observability.server import serving_operations

    registry = multiprocess_registry(metrics_dir)
    async with serving_operations(rt, port=rt.settings.metrics_port, registry=registry):
        yield
