"""The client commands of the real ``bellhook`` CLI (webhooks, events, deliveries,
recover), run as subprocesses against a real ``bellhook serve --dev`` subprocess, with
receivers on loopback.

One service for the module; its tests share it, so each makes its own webhooks and
checks only what it made. The CLI runs in asyncio subprocesses, so the test's event loop
keeps serving the receivers meanwhile; independent calls run at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import typer

from tests.support import (
    Receiver,
    Server,
    bellhook_env,
    create_admin_key,
    eventually,
    free_port,
    ok,
    receiver_pool,
    status,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]

CLI_TIMEOUT = 60
ADMIN = "admin"  # run() with the admin key (the default)
USER = "user"  # with the key of owner "acme"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@dataclass
class Bellhook:
    server: Server
    keys: dict[str, str]
    rx: Receiver  # answers 200
    down: Receiver  # answers 500

    def cli_env(self, key: str | None, url: str | None = None) -> dict[str, str]:
        env = bellhook_env(BELLHOOK_URL=url or self.server.base_url)
        if key is not None:
            env["BELLHOOK_API_KEY"] = self.keys[key]
        return env

    async def run(
        self,
        *args: str,
        key: str | None = ADMIN,
        url: str | None = None,
        stdin: bytes | None = None,
    ) -> Result:
        """``python -m bellhook *args`` with BELLHOOK_URL and BELLHOOK_API_KEY set."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bellhook", *args,
            env=self.cli_env(key, url),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(stdin), CLI_TIMEOUT)
        assert proc.returncode is not None
        result = Result(proc.returncode, out.decode(), err.decode())
        for token in self.keys.values():
            assert token not in result.stdout + result.stderr, "an API key was printed"
        return result

    def api(self, key: str = ADMIN) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.keys[key]}"}
        return httpx.AsyncClient(base_url=self.server.base_url, headers=headers, timeout=30)

    async def webhook(self, url: str, events: list[str], key: str = ADMIN) -> str:
        """A webhook made through the API (set-up, not under test): its id."""
        async with self.api(key) as api:
            resp = await api.post("/api/webhooks", json={"url": url, "events": events})
        assert resp.status_code == 201, resp.text
        webhook_id: str = resp.json()["data"]["id"]
        return webhook_id

    async def deliveries(self, webhook_id: str) -> list[dict[str, Any]]:
        async with self.api() as api:
            resp = await api.get(f"/api/webhooks/{webhook_id}/deliveries")
        assert resp.status_code == 200, resp.text
        found: list[dict[str, Any]] = resp.json()["data"]
        return found


def done(result: Result) -> Result:
    assert result.code == 0, str(result)
    assert "Traceback" not in result.stderr, str(result)
    return result


def failed(result: Result, code: int, *, one_line: bool = True) -> str:
    """The error line of a failure with exit ``code``: one line on stderr, no traceback."""
    assert result.code == code, str(result)
    assert "Traceback" not in result.stdout + result.stderr, str(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, str(result)
    if one_line:
        assert len(lines) == 1, str(result)
        assert lines[0].startswith("bellhook: "), str(result)
    return lines[-1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bellhook(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bellhook]:
    tmp = tmp_path_factory.mktemp("cli-client")
    env = bellhook_env(
        BELLHOOK_DATABASE_URL=f"sqlite:///{tmp / 'bellhook.db'}",  # SQLite only
        BELLHOOK_RETRY_SCHEDULE="0.1,0.1",  # a failing delivery fails for good in ~0.3 s
        BELLHOOK_DELIVERY_TIMEOUT="2",
        BELLHOOK_POLL_INTERVAL="0.05",
        BELLHOOK_RATE_LIMIT="0",
    )
    admin = await create_admin_key(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bellhook", "keys", "create", "--owner", "acme",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    assert proc.returncode == 0, err.decode()
    user = out.decode().strip().splitlines()[-1].strip()
    server = Server(env, tmp / "serve.log")
    async with receiver_pool() as start:
        rx = await start(ok)
        down = await start(status(500, b"down for maintenance"))
        await server.start()
        try:
            yield Bellhook(server, {ADMIN: admin, USER: user}, rx, down)
        finally:
            await server.stop()


# --- webhooks --------------------------------------------------------------------------


async def test_webhooks_from_create_to_delete(bellhook: Bellhook) -> None:
    endpoint = bellhook.rx.url("/lifecycle")
    created = done(
        await bellhook.run(
            "webhooks", "create", endpoint, "--events", "post.created,comment.created",
            "--description", "from the cli",
        )
    )  # fmt: skip
    assert endpoint in created.stdout
    secret = created.stdout.strip().splitlines()[-1]  # generated: alone on the last line
    assert secret.startswith("whsec_"), created.stdout
    hook_id = next(word for word in created.stdout.split() if word.startswith("wh_"))

    listed_json, listed, shown, shown_json = await asyncio.gather(
        bellhook.run("webhooks", "list", "--json"),
        bellhook.run("webhooks", "list"),
        bellhook.run("webhooks", "show", hook_id),
        bellhook.run("webhooks", "show", hook_id, "--json"),
    )
    mine = [h for h in done(listed_json).json() if h["id"] == hook_id]
    assert len(mine) == 1
    assert mine[0]["url"] == endpoint
    assert mine[0]["events"] == ["post.created", "comment.created"]
    assert "secret" not in mine[0]
    assert hook_id in done(listed).stdout and endpoint in listed.stdout
    assert endpoint in done(shown).stdout and "from the cli" in shown.stdout
    assert done(shown_json).json()["description"] == "from the cli"

    moved = bellhook.rx.url("/moved")
    updated = done(
        await bellhook.run(
            "webhooks", "update", hook_id, "--endpoint", moved, "--events", "post.created",
            "--description", "", "--json",
        )
    )  # fmt: skip
    assert updated.json()["url"] == moved
    assert updated.json()["events"] == ["post.created"]
    assert updated.json()["description"] is None

    tested, tested_json, shown_secret = await asyncio.gather(
        bellhook.run("webhooks", "test", hook_id),
        bellhook.run("webhooks", "test", hook_id, "--event", "post.created", "--json"),
        bellhook.run("webhooks", "secret", hook_id),
    )
    assert "delivered: 200" in done(tested).stdout
    outcome = done(tested_json).json()
    assert outcome["success"] is True and outcome["statusCode"] == 200
    assert done(shown_secret).stdout.strip() == secret
    assert len([h for h in bellhook.rx.hits if h.path == "/moved"]) == 2

    new_secret = "rotated-from-the-cli-0123456789"
    rotated = done(
        await bellhook.run(
            "webhooks", "rotate-secret", hook_id, "--secret", new_secret,
            "--keep-previous-for", "60", "--json",
        )
    )  # fmt: skip
    assert rotated.json()["secret"] == new_secret
    assert rotated.json()["previousSecretExpiresAt"] is not None
    generated = done(await bellhook.run("webhooks", "rotate-secret", hook_id))
    assert generated.stdout.strip().startswith("whsec_")
    assert "previous secret" in generated.stderr

    deleted = done(await bellhook.run("webhooks", "delete", hook_id))
    assert hook_id in deleted.stdout
    gone = await bellhook.run("webhooks", "show", hook_id, "--json")
    assert hook_id in failed(gone, 4)
    assert gone.stdout == ""


async def test_webhooks_failures_are_one_line_with_their_exit_code(bellhook: Bellhook) -> None:
    failing = await bellhook.webhook(bellhook.down.url("/failing"), ["post.created"])
    others = await bellhook.webhook(bellhook.rx.url("/admins"), ["post.created"])
    (
        wrong_key, no_key, show, create, no_events, update, nothing, delete, test,
        secret, rotate, usage,
    ) = await asyncio.gather(
        bellhook.run("webhooks", "list", "--api-key", "bh_not_a_real_key_0000"),
        bellhook.run("webhooks", "list", key=None),
        bellhook.run("webhooks", "show", "wh_missing"),
        bellhook.run("webhooks", "create", "ftp://example.com/x", "--events", "post.created"),
        bellhook.run("webhooks", "create", bellhook.rx.url()),
        bellhook.run("webhooks", "update", "wh_missing", "--status", "active"),
        bellhook.run("webhooks", "update", others),
        bellhook.run("webhooks", "delete", "wh_missing"),
        bellhook.run("webhooks", "test", failing),
        bellhook.run("webhooks", "secret", others, key=USER),  # another owner's
        bellhook.run("webhooks", "rotate-secret", others, "--keep-previous-for", "999999999"),
        bellhook.run("webhooks", "show"),
    )  # fmt: skip
    assert "401 unauthorized" in failed(wrong_key, 5)
    assert "BELLHOOK_API_KEY" in failed(no_key, 5)
    assert "404 not_found" in failed(show, 4)
    assert "422" in failed(create, 1)
    assert "--events" in failed(no_events, 2)
    failed(update, 4)
    assert "nothing to change" in failed(nothing, 2)
    failed(delete, 4)
    assert "500" in failed(test, 1, one_line=False)
    assert test.stderr.strip().startswith("failed: 500")
    assert failed(secret, 4)
    assert "graceSeconds" in failed(rotate, 1)
    assert usage.code == 2 and "Traceback" not in usage.stderr
    assert "Missing argument" in usage.stderr


# --- events ----------------------------------------------------------------------------


async def test_events_publish_one(bellhook: Bellhook, tmp_path: Path) -> None:
    hook_id = await bellhook.webhook(bellhook.rx.url("/acme"), ["post.created"], key=USER)
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps({"id": "p2", "content": "from a file"}))
    as_json, from_file = await asyncio.gather(
        bellhook.run(
            "events", "publish", "post.created", "--data", '{"id": "p1"}',
            "--audience", "acme,nobody", "--id", "cli-event-1", "--json",
        ),
        bellhook.run(
            "events", "publish", "post.created", "--data", f"@{data_file}",
            "--audience", "acme", "--id", "cli-event-2",
        ),
    )  # fmt: skip
    accepted = done(as_json).json()
    assert accepted["id"] == "cli-event-1"
    assert accepted["deliveries"] >= 1 and accepted["duplicate"] is False
    assert "published post.created cli-event-2" in done(from_file).stdout
    hits = await bellhook.rx.wait_until(
        lambda hits: (
            {"cli-event-1", "cli-event-2"} <= {h.event_id for h in hits if h.path == "/acme"}
        )
    )
    by_id = {h.event_id: h.json() for h in hits if h.path == "/acme"}
    assert by_id["cli-event-1"]["data"] == {"id": "p1"}
    assert by_id["cli-event-2"]["data"] == {"id": "p2", "content": "from a file"}
    assert len(await bellhook.deliveries(hook_id)) == 2

    again, bad_json, not_admin, missing_file = await asyncio.gather(
        bellhook.run("events", "publish", "post.created", "--id", "cli-event-1"),
        bellhook.run("events", "publish", "post.created", "--data", '{"id": '),
        bellhook.run("events", "publish", "post.created", key=USER),
        bellhook.run("events", "publish", "post.created", "--data", f"@{tmp_path / 'no.json'}"),
    )
    assert "duplicate" in done(again).stdout
    assert "not valid JSON" in failed(bad_json, 2)
    assert "403" in failed(not_admin, 5)
    assert "no.json" in failed(missing_file, 2)


async def test_events_publish_from_ndjson_in_batches(bellhook: Bellhook, tmp_path: Path) -> None:
    await bellhook.webhook(bellhook.rx.url("/batch"), ["user.registered"], key=USER)
    lines = [
        {"event": "user.registered", "id": "batch-1", "data": {"n": 1}, "audience": ["acme"]},
        {"event": "user.registered", "id": "batch-2", "data": {"n": 2}, "audience": ["acme"]},
        "{this is not json",
        {"event": "user.registered", "id": "batch-4", "data": {"n": 4}, "audience": ["acme"]},
        {"event": "no.such.type", "data": {}},
        {"event": "user.registered", "id": "batch-6", "data": {"n": 6}, "audience": ["acme"]},
    ]
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_text(text + "\n\n")
    human = await bellhook.run("events", "publish", "--from-file", str(ndjson), "--batch-size", "2")
    failed(human, 1, one_line=False)
    assert "accepted 4 events" in human.stdout and "rejected 2" in human.stdout
    assert "publishing" in human.stderr and "7/7" in human.stderr  # the progress bar
    assert any(line.startswith("line 3: invalid_json") for line in human.stderr.splitlines())
    assert any(line.startswith("line 5: unknown_event_type") for line in human.stderr.splitlines())

    # Again from stdin: the same events are duplicates now.
    as_json = await bellhook.run(
        "events", "publish", "--from-file", "-", "--json", stdin=text.encode()
    )
    assert as_json.code == 1, str(as_json)
    report = as_json.json()
    assert "publishing" not in as_json.stderr  # no bar with --json
    assert report["accepted"] == 4 and report["rejected"] == 2
    assert report["duplicates"] == 4  # the same ids as the file, published again
    assert [(e["line"], e["code"]) for e in report["errors"]] == [
        (3, "invalid_json"),
        (5, "unknown_event_type"),
    ]
    await bellhook.rx.wait_until(
        lambda hits: (
            {f"batch-{n}" for n in (1, 2, 4, 6)} <= {h.event_id for h in hits if h.path == "/batch"}
        )
    )


# --- deliveries ------------------------------------------------------------------------


async def test_deliveries_list_show_retry(bellhook: Bellhook) -> None:
    hook_id = await bellhook.webhook(bellhook.rx.url("/log"), ["comment.created"], key=USER)
    async with bellhook.api() as api:
        resp = await api.post(
            "/api/events",
            json={"event": "comment.created", "id": "log-1", "data": {}, "audience": ["acme"]},
        )
        assert resp.status_code == 202, resp.text
    found = await eventually(
        lambda: bellhook.deliveries(hook_id),
        lambda ds: any(d["status"] == "succeeded" for d in ds),
        what="the delivery succeeded",
    )
    delivery_id = found[0]["id"]

    listed_json, listed, shown, shown_json, retried, retried_json = await asyncio.gather(
        bellhook.run("deliveries", "list", hook_id, "--json", key=USER),
        bellhook.run("deliveries", "list", hook_id, "--status", "succeeded", key=USER),
        bellhook.run("deliveries", "show", hook_id, delivery_id, key=USER),
        bellhook.run("deliveries", "show", hook_id, delivery_id, "--json", key=USER),
        bellhook.run("deliveries", "retry", hook_id, delivery_id, key=USER),
        bellhook.run("deliveries", "retry", hook_id, delivery_id, "--json", key=USER),
    )
    items = done(listed_json).json()
    assert items[-1]["id"] == delivery_id and items[-1]["eventId"] == "log-1"
    assert delivery_id in done(listed).stdout and "succeeded" in listed.stdout
    assert "log-1" in done(shown).stdout and "200" in shown.stdout
    detail = done(shown_json).json()
    assert detail["id"] == delivery_id and detail["attempts"][0]["statusCode"] == 200
    assert "delivered: 200" in done(retried).stdout
    assert done(retried_json).json()["success"] is True
    assert len(bellhook.rx.of("log-1")) >= 3  # the delivery, then the two retries

    unknown, no_delivery, no_retry, bad_status = await asyncio.gather(
        bellhook.run("deliveries", "list", "wh_missing"),
        bellhook.run("deliveries", "show", hook_id, "dlv_missing"),
        bellhook.run("deliveries", "retry", hook_id, "dlv_missing"),
        bellhook.run("deliveries", "list", hook_id, "--status", "lost"),
    )
    failed(unknown, 4)
    assert "dlv_missing" in failed(no_delivery, 4)
    failed(no_retry, 4)
    assert "--status" in failed(bad_status, 2)


async def started_tail(bellhook: Bellhook, *args: str) -> asyncio.subprocess.Process:
    """`deliveries tail *args`, once it says it is following (it has read the log once)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bellhook", "deliveries", "tail", *args,
        env=bellhook.cli_env(ADMIN),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), CLI_TIMEOUT)
    assert b"following the deliveries of" in line, line
    return proc


async def test_deliveries_tail_follows_new_deliveries(bellhook: Bellhook) -> None:
    hook_id = await bellhook.webhook(bellhook.rx.url("/tail"), ["reaction.added"], key=USER)

    async def publish(*ids: str) -> None:
        events = [
            {"event": "reaction.added", "id": i, "data": {}, "audience": ["acme"]} for i in ids
        ]
        async with bellhook.api() as api:
            resp = await api.post("/api/events/batch", json={"events": events})
        assert resp.status_code == 202, resp.text

    await publish("tail-before")  # there already: not printed
    await bellhook.rx.wait_until(lambda hits: any(h.event_id == "tail-before" for h in hits))
    counted, endless = await asyncio.gather(
        started_tail(bellhook, hook_id, "--count", "2", "--json", "--interval", "0.1"),
        started_tail(bellhook, hook_id, "--interval", "0.1"),
    )
    await publish("tail-1", "tail-2")
    out, err = await asyncio.wait_for(counted.communicate(), CLI_TIMEOUT)
    assert counted.returncode == 0, err.decode()
    printed = [json.loads(line) for line in out.decode().splitlines()]
    assert len(printed) == 2
    assert {d["eventId"] for d in printed} <= {"tail-1", "tail-2"}
    assert all(d["status"] in ("pending", "succeeded") for d in printed)

    # Without --count it runs until Ctrl-C, then exits 0.
    assert endless.stdout is not None
    line = await asyncio.wait_for(endless.stdout.readline(), CLI_TIMEOUT)
    assert b"reaction.added" in line and b"dlv_" in line, line
    endless.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(endless.communicate(), CLI_TIMEOUT)
    assert endless.returncode == 0, err.decode()
    assert b"Traceback" not in err

    failed(await bellhook.run("deliveries", "tail", "wh_missing", "--count", "1"), 4)


# --- recover, the service down -------------------------------------------------------


async def test_recover_resends_failed_deliveries(bellhook: Bellhook) -> None:
    hook_id = await bellhook.webhook(bellhook.down.url("/recover"), ["friend.request.sent"])
    async with bellhook.api() as api:
        resp = await api.post(
            "/api/events", json={"event": "friend.request.sent", "id": "rec-1", "data": {}}
        )
        assert resp.status_code == 202, resp.text
    await eventually(
        lambda: bellhook.deliveries(hook_id),
        lambda ds: len(ds) == 1 and ds[0]["status"] == "failed",
        what="the delivery failed for good",
    )
    attempts = len(bellhook.down.of("rec-1"))

    as_json = done(await bellhook.run("recover", hook_id, "--since", "10m", "--json"))
    assert as_json.json()["resent"] == 1
    await bellhook.down.wait_until(lambda _hits: len(bellhook.down.of("rec-1")) > attempts)
    human, bad_since, unknown = await asyncio.gather(
        bellhook.run("recover", hook_id, "--since", "2020-01-01T00:00:00Z"),
        bellhook.run("recover", hook_id, "--since", "yesterday"),
        bellhook.run("recover", "wh_missing", "--since", "1h"),
    )
    assert "rescheduled" in done(human).stdout and "2020-01-01T00:00:00Z" in human.stdout
    assert "--since" in failed(bad_since, 2)
    failed(unknown, 4)


async def test_a_service_that_is_down_exits_3(bellhook: Bellhook) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    listed, published = await asyncio.gather(
        bellhook.run("webhooks", "list", url=nowhere),
        bellhook.run("events", "publish", "post.created", "--json", url=nowhere),
    )
    assert "cannot reach" in failed(listed, 3)
    assert "cannot reach" in failed(published, 3)
    assert published.stdout == ""


# --- help and completion -------------------------------------------------------------


async def test_every_client_command_has_help_with_an_example() -> None:
    from bellhook.cli import app

    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    context = typer.Context(root, info_name="bellhook")
    assert "Exit codes" in root.get_help(context)
    checked = []
    for group_name in ("webhooks", "events", "deliveries"):
        group = root.commands[group_name]
        assert isinstance(group, typer.core.TyperGroup)
        for name, command in group.commands.items():
            help_text = command.get_help(typer.Context(command, info_name=name))
            assert "Example" in help_text, f"{group_name} {name}"
            assert "BELLHOOK_API_KEY" in help_text
            checked.append(f"{group_name} {name}")
    recover = root.commands["recover"]
    assert "Example" in recover.get_help(typer.Context(recover, info_name="recover"))
    assert len(checked) == 8 + 1 + 4

    # And every other command, the service's own (serve, worker, keys ...) included.
    def walk(group: typer.core.TyperGroup, prefix: str) -> list[str]:
        missing = []
        for name, command in group.commands.items():
            if isinstance(command, typer.core.TyperGroup):
                missing += walk(command, f"{prefix}{name} ")
            elif "Example" not in command.get_help(typer.Context(command, info_name=name)):
                missing.append(prefix + name)
        return missing

    assert walk(root, "") == []


async def test_help_and_shell_completion(bellhook: Bellhook) -> None:
    script = Path(sys.executable).parent / "bellhook"  # completion goes by the program name
    env = bellhook.cli_env(ADMIN)

    async def run(*args: str, **extra: str) -> Result:
        proc = await asyncio.create_subprocess_exec(
            str(script), *args, env={**env, **extra},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    root, sub, shown, completed = await asyncio.gather(
        run("--help"),
        run("webhooks", "list", "--help"),
        run("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1"),
        run(_BELLHOOK_COMPLETE="complete_bash", COMP_WORDS="bellhook webhooks rot", COMP_CWORD="2"),
    )
    for command in ("webhooks", "events", "deliveries", "recover", "--install-completion"):
        assert command in done(root).stdout
    assert "Exit codes" in root.stdout and "5  unauthorized" in root.stdout
    assert "BELLHOOK_API_KEY" in done(sub).stdout
    assert bellhook.keys[ADMIN] not in sub.stdout  # the environment's key is not shown
    assert "complete -o default -F _bellhook_completion bellhook" in done(shown).stdout
    assert done(completed).stdout.split() == ["rotate-secret"]
