"""The processes a scenario runs (bellhook, the receiver, the load generator, PostgreSQL
databases) and how they are started, watched and stopped. Everything on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    HOST,
    free_port,
    http_json,
    wait_for_port,
)
from bench.config import BELLHOOK, PY, ROOT, Config


class Proc:
    """One child process, its output in a log file; stopped with SIGTERM, then SIGKILL."""

    running: list[Proc] = []

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        self._log = self.log.open("ab")
        self.popen = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.pid = self.popen.pid
        Proc.running.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        if self in Proc.running:
            Proc.running.remove(self)
        return int(self.popen.returncode)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(cls.running):
            with contextlib.suppress(Exception):
                proc.stop(5)


def run_child(argv: list[str], *, env: dict[str, str] | None = None, timeout: float) -> Any:
    """Run a short-lived role to completion; its last stdout line is JSON. Adds its CPU."""
    (result,), cpu = run_children([argv], env=env, timeout=timeout)
    if isinstance(result, dict):
        result["cpu_seconds"] = cpu
    return result


def run_children(
    argvs: list[list[str]], *, env: dict[str, str] | None = None, timeout: float
) -> tuple[list[Any], float]:
    """Run short-lived roles at once, to completion; each one's last stdout line is JSON.
    Returns those, and the CPU seconds of all of them together."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = [
        subprocess.Popen(
            argv,
            env=env or dict(os.environ),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    outputs = []
    try:
        deadline = time.monotonic() + timeout
        for child in children:
            outputs.append(child.communicate(timeout=max(deadline - time.monotonic(), 0.1)))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results = []
    for argv, child, (stdout, stderr) in zip(argvs, children, outputs, strict=True):
        if child.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:4])} … exited {child.returncode}: {stderr[-2000:]}"
            )
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results, cpu


class Receiver:
    def __init__(self, logdir: Path, *, port: int | None = None, hang: float = 30.0) -> None:
        self.port = port or free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.proc = Proc(
            f"receiver-{self.port}",
            [PY, "-m", "bench.receiver", "--port", str(self.port), "--hang", str(hang)],
            env=dict(os.environ),
            logdir=logdir,
        )
        wait_for_port(self.port)

    def url(self, kind: str, name: str) -> str:
        return f"{self.base}/{kind}/{name}"

    def secrets(self, keys: dict[str, tuple[str, str]]) -> None:
        body = {name: {"scheme": scheme, "secret": s} for name, (scheme, s) in keys.items()}
        status, _ = http_json("POST", f"{self.base}/_control/secrets", body)
        assert status == 200

    def reset(self) -> None:
        http_json("POST", f"{self.base}/_control/reset", {})

    def stats(self) -> dict[str, Any]:
        return http_json("GET", f"{self.base}/_control/stats")[1]  # type: ignore[no-any-return]

    def count(self) -> tuple[int, float | None, float | None]:
        s = http_json("GET", f"{self.base}/_control/stats?light=1")[1]
        return int(s["count"]), s["first"], s["last"]

    def arrivals(self) -> dict[str, list[Any]]:
        return http_json("GET", f"{self.base}/_control/arrivals", timeout=120)[1]  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.stop(5)


def bellhook_env(cfg: Config, db_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BELLHOOK_DATABASE_URL=db_url,
        BELLHOOK_DEV_MODE="true",  # webhooks on http://127.0.0.1
        BELLHOOK_MAX_CONCURRENCY=str(cfg.max_concurrency),
        BELLHOOK_PER_WEBHOOK_CONCURRENCY=str(cfg.per_webhook),
        BELLHOOK_LOG_LEVEL="info",
    )
    env.update(extra)
    return env


def create_admin_key(env: dict[str, str]) -> str:
    done = subprocess.run(
        [*BELLHOOK, "keys", "create", "--owner", "bench", "--admin"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Api:
    proc: Proc
    base: str
    key: str

    def register(self, url: str, secret: str) -> str:
        status, body = http_json(
            "POST",
            f"{self.base}/api/webhooks",
            {"url": url, "events": ["*"], "secret": secret},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        if status != 201:
            raise RuntimeError(f"registering {url} answered {status}: {body}")
        return str(body["data"]["id"])


def start_api(env: dict[str, str], logdir: Path, key: str, *, worker: bool) -> Api:
    port = free_port()
    argv = [*BELLHOOK, "serve", "--port", str(port), "--worker" if worker else "--no-worker"]
    proc = Proc(f"serve-{port}", argv, env=env, logdir=logdir)
    base = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"bellhook serve exited:\n{proc.tail()}")
        with contextlib.suppress(OSError):
            if http_json("GET", f"{base}/healthz", timeout=2)[0] == 200:
                return Api(proc, base, key)
        time.sleep(0.1)
    raise TimeoutError(f"bellhook serve did not come up:\n{proc.tail()}")


def register_webhooks(
    api: Api, receiver_base: str, names: list[str], kinds: list[str] | None = None
) -> dict[str, tuple[str, str]]:
    """Webhooks named ``names`` at the receiver; returns the receiver's secrets table."""
    keys: dict[str, tuple[str, str]] = {}
    for i, name in enumerate(names):
        kind = kinds[i] if kinds else "ok"
        secret = f"bench-{name}-{secrets.token_hex(12)}"
        api.register(f"{receiver_base}/{kind}/{name}", secret)
        keys[name] = ("bellhook", secret)
    return keys


def loadgen(mode: str, api: Api, timeout: float, **options: Any) -> dict[str, Any]:
    argv = [PY, "-m", "bench.loadgen", mode, "--url", api.base, "--key", api.key]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return run_child(argv, timeout=timeout)  # type: ignore[no-any-return]


def delivery_counts(db_url: str) -> dict[str, int] | None:
    """Deliveries by status, read straight from an SQLite file (None for PostgreSQL)."""
    if not db_url.startswith("sqlite:///"):
        return None
    with contextlib.closing(sqlite3.connect(db_url[len("sqlite:///") :])) as conn:
        return {s: n for s, n in conn.execute("select status, count(*) from deliveries group by 1")}


class Postgres:
    """Fresh databases on the server of ``BELLHOOK_BENCH_DATABASE_URL`` (loopback only)."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.hostname not in (HOST, "localhost"):
            raise ValueError("BELLHOOK_BENCH_DATABASE_URL must point at 127.0.0.1")
        self.parsed = parsed
        self.created: list[str] = []

    async def _admin(self, sql: str) -> Any:
        import asyncpg

        # asyncpg takes postgresql:// only; bellhook also takes SQLAlchemy's +asyncpg form.
        plain = urllib.parse.urlunsplit(self.parsed._replace(scheme="postgresql"))
        conn = await asyncpg.connect(plain)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    def wal_position(self) -> int:
        """The server's write-ahead log position, in bytes: what it wrote between two
        readings (every database of the server; the bench's alone run then)."""
        return int(asyncio.run(self._admin("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")))

    def fresh(self) -> str:
        name = f"bellhook_bench_{os.getpid()}_{len(self.created)}"
        asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return urllib.parse.urlunsplit(self.parsed._replace(path=f"/{name}"))

    def drop_all(self) -> None:
        for name in self.created:
            with contextlib.suppress(Exception):
                asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.clear()


@contextlib.contextmanager
def workdir(name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"bellhook-bench-{name}-"))
    try:
        yield path
    finally:
        Proc.stop_all()
        shutil.rmtree(path, ignore_errors=True)


def sqlite_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'bellhook.db'}"
