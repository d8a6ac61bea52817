"""Shared fixtures: a real bellhook app served by uvicorn on loopback, on a real database.

The database is a fresh SQLite file per test, or the PostgreSQL named by
BELLHOOK_TEST_DATABASE_URL (reset before each test). If that variable is set and
PostgreSQL is unreachable, tests fail rather than skip.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from bellhook.api.app import create_app
from bellhook.config import Settings
from bellhook.domain.destination import Resolver
from bellhook.observability.tracing import Tracing
from bellhook.runtime import Runtime, utc_now
from bellhook.store.database import Database
from tests.support import Receiver, Setup, guard_loopback, receiver_pool

# Read once, before the autouse fixture below clears every BELLHOOK_* variable.
TEST_DATABASE_URL = os.environ.get("BELLHOOK_TEST_DATABASE_URL")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BELLHOOK_"):
            monkeypatch.delenv(name)


class StaticResolver:
    """Answers every host with fixed addresses; never touches real DNS."""

    def __init__(
        self, addresses: dict[str, list[str]] | None = None, default: list[str] | None = None
    ) -> None:
        self.addresses = addresses or {}
        self.default = default if default is not None else ["93.184.216.34"]
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return list(self.addresses.get(host, self.default))


async def reset_postgres(url: str) -> None:
    # A test that refused connections and was killed before it allowed them again
    # (tests.postgres.allow_connections) must not break every test after it.
    from tests.postgres import allow_connections

    await allow_connections(url, True)
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await db.close()


@pytest.fixture
async def database_url(tmp_path: Path) -> str:
    if TEST_DATABASE_URL:
        await reset_postgres(TEST_DATABASE_URL)
        return TEST_DATABASE_URL
    return f"sqlite:///{tmp_path / 'bellhook.db'}"


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": database_url, "worker": False}
        values.update(overrides)
        return Settings(**values)

    return make


@dataclass
class Service:
    """A running bellhook app: its base URL and runtime, and helpers to call it."""

    base_url: str
    runtime: Runtime

    async def new_key(self, owner: str, *, admin: bool = False) -> str:
        _key, token = await self.runtime.keys.create(
            owner, is_admin=admin, name=None, now=utc_now()
        )
        return token

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)


async def start_service(
    settings: Settings, *, resolver: Resolver | None = None, tracing: Tracing | None = None
) -> tuple[uvicorn.Server, asyncio.Task[None], Service]:
    app = create_app(settings, resolver=resolver or StaticResolver(), tracing=tracing)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the startup error
            raise RuntimeError("uvicorn stopped during startup")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, Service(f"http://127.0.0.1:{port}", app.state.runtime)


@pytest.fixture
async def serve(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """``await serve(**settings_overrides)`` starts an app; all are stopped at teardown."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(*, resolver: Resolver | None = None, **overrides: Any) -> Service:
        server, task, service = await start_service(make_settings(**overrides), resolver=resolver)
        running.append((server, task))
        return service

    yield start
    for server, task in running:
        server.should_exit = True
        await task


@pytest.fixture
async def service(serve: Callable[..., Any]) -> Service:
    svc: Service = await serve()
    return svc


@pytest.fixture
def project_root() -> Iterator[Path]:
    yield Path(__file__).resolve().parent.parent


# --- receivers and delivering apps (helpers in tests/support.py) ---------------------------


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test fails if it connects anywhere but 127.0.0.1 or ::1."""
    log = guard_loopback(monkeypatch)
    yield
    assert log.violations == []


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    async with receiver_pool() as start:
        yield start


@pytest.fixture
async def delivering(serve: Callable[..., Any]) -> AsyncIterator[Callable[..., Awaitable[Setup]]]:
    """``await delivering(**settings)``: a delivering app and an admin client for it."""
    made: list[httpx.AsyncClient] = []

    async def start(**overrides: Any) -> Setup:
        settings: dict[str, Any] = {
            "worker": True,
            "dev_mode": True,
            "retry_schedule": "0.2,0.4,0.8",
            "delivery_timeout": 2.0,
            # Poll often, so that retry spacing comes from the schedule, not the poll.
            "poll_interval": 0.05,
        }
        settings.update(overrides)
        svc = await serve(**settings)
        api = svc.client(await svc.new_key("ops", admin=True))
        made.append(api)
        return Setup(svc, api)

    yield start
    for client in made:
        await client.aclose()


# --- Kafka (tests/broker.py) -------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Tansu broker for the session; a test that needs it fails if it cannot start."""
    from tests.broker import start_broker

    broker = start_broker(tmp_path_factory.mktemp("kafka") / "broker.log")
    yield broker
    broker.stop()
