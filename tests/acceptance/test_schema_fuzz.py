"""Schemathesis against the service's own /openapi.json: no 5xx, answers match the schema.

The real app runs under uvicorn on 127.0.0.1, in a thread with its own event
loop (schemathesis calls it with blocking ``requests``), on the test database.
Every operation is fuzzed with positive and negative data, with an admin key and
with an ordinary key, ``MAX_EXAMPLES`` cases each (deterministic, so CI is
repeatable), within ``BUDGET`` seconds for the module.

What could send traffic off this machine is kept out: the dispatcher is off (so
webhook URLs are only checked, against a fake DNS that answers a public address,
never connected to), and the two operations that send a request at once,
``POST …/test`` and ``POST …/deliveries/{id}/retry``, are not fuzzed.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from bellhook.api.app import create_app
from bellhook.config import Settings
from bellhook.runtime import utc_now
from tests.conftest import TEST_DATABASE_URL, StaticResolver, reset_postgres

MAX_EXAMPLES = 25
BUDGET = 600.0  # seconds for the whole module, on top of pytest's per-test timeout
CHECKS = [not_a_server_error, response_schema_conformance]
SENDS_NOW = ("/test", "/retry")  # these POST to the webhook's URL right away


def _operations() -> list[tuple[str, str]]:
    """Every operation of the app's OpenAPI, except those that send a request."""
    app = create_app(Settings(database_url="sqlite:///unused-for-collection.db"))
    spec = app.openapi()  # builds the document only: no database, no server
    return [
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if not path.endswith(SENDS_NOW)
    ]


OPERATIONS = _operations()


@dataclass
class Target:
    base_url: str
    schema: Any
    tokens: dict[str, str]  # "admin" / "user" -> API key
    webhook_ids: dict[str, str]  # a webhook each key owns
    delivery_ids: dict[str, str]  # a delivery of that webhook
    started: float

    def webhook(self, role: str) -> str:
        """A fresh webhook of ``role`` (for DELETE, which uses one up)."""
        resp = httpx.post(
            f"{self.base_url}/api/webhooks",
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
            json={"url": "https://fuzz.example.com/hook", "events": ["*"]},
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
        return str(resp.json()["data"]["id"])


class ServerThread:
    """uvicorn with the real app, in a thread with its own event loop."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings, resolver=StaticResolver())
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_config=None)
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="fuzz-target", daemon=True)
        self.failed: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        except BaseException as exc:
            self.failed = exc
        finally:
            self.loop.close()

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:  # uvicorn offers no awaitable for this thread
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fuzz target did not start: {self.failed!r}")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop (e.g. to create API keys)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def _database_url(tmp: Path) -> str:
    if TEST_DATABASE_URL:
        asyncio.run(reset_postgres(TEST_DATABASE_URL))
        return TEST_DATABASE_URL
    return f"sqlite:///{tmp / 'fuzz.db'}"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith("BELLHOOK_"):
                env.delenv(name)
        settings = Settings(
            database_url=_database_url(tmp_path_factory.mktemp("fuzz")),
            worker=False,  # nothing is ever delivered
            dev_mode=False,
            rate_limit=0,  # thousands of calls with one key; limits have their own tests
        )
    server = ServerThread(settings)
    base_url = server.start()
    try:
        runtime = server.app.state.runtime
        tokens: dict[str, str] = {}
        for role, admin in (("admin", True), ("user", False)):
            _key, tokens[role] = server.call(
                runtime.keys.create(f"fuzz-{role}", is_admin=admin, name=None, now=utc_now())
            )
        webhook_ids: dict[str, str] = {}
        delivery_ids: dict[str, str] = {}
        with httpx.Client(base_url=base_url, timeout=30) as client:
            for role, token in tokens.items():
                auth = {"Authorization": f"Bearer {token}"}
                resp = client.post(
                    "/api/webhooks",
                    headers=auth,
                    json={"url": "https://fuzz.example.com/hook", "events": ["*"]},
                )
                assert resp.status_code == 201, resp.text
                webhook_ids[role] = resp.json()["data"]["id"]
            published = client.post(
                "/api/events",
                headers={"Authorization": f"Bearer {tokens['admin']}"},
                json={"event": "post.created", "audience": "*", "data": {"id": "p"}},
            )
            assert published.status_code == 202, published.text
            for role, token in tokens.items():
                listed = client.get(
                    f"/api/webhooks/{webhook_ids[role]}/deliveries",
                    headers={"Authorization": f"Bearer {token}"},
                )
                delivery_ids[role] = listed.json()["data"][0]["id"]
        schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
        yield Target(base_url, schema, tokens, webhook_ids, delivery_ids, time.monotonic())
    finally:
        server.stop()


def test_the_fuzzed_operations_are_the_served_ones(target: Target) -> None:
    served = httpx.get(f"{target.base_url}/openapi.json", timeout=30).json()
    listed = {
        (method.upper(), path)
        for path, operations in served["paths"].items()
        for method in operations
        if not path.endswith(SENDS_NOW)
    }
    assert listed == set(OPERATIONS)
    assert len(OPERATIONS) >= 10


@pytest.mark.timeout(300)
@pytest.mark.parametrize("role", ["user", "admin"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_error_and_responses_match_the_schema(
    target: Target, method: str, path: str, role: str
) -> None:
    if time.monotonic() - target.started > BUDGET:
        pytest.fail(f"the fuzzing budget of {BUDGET:g} s for this module is spent")
    operation = target.schema[path][method]
    token = target.tokens[role]
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, real_ids=st.booleans())
    def run(case: Any, real_ids: bool) -> None:
        # Half the cases aim at this key's real webhook (and delivery), so that the
        # fuzzed bodies and queries get past the 404 and reach the handlers.
        if real_ids and case.path_parameters:
            if "webhook_id" in case.path_parameters:
                case.path_parameters["webhook_id"] = (
                    target.webhook(role) if method == "DELETE" else target.webhook_ids[role]
                )
            if "delivery_id" in case.path_parameters:
                case.path_parameters["delivery_id"] = target.delivery_ids[role]
        case.call_and_validate(
            base_url=target.base_url,
            headers={"Authorization": f"Bearer {token}"},
            checks=CHECKS,
            timeout=30,
        )

    run()
