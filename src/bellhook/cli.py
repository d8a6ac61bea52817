"""The ``bellhook`` command: serve, worker, consume, migrate, listen, keys, and the client
commands of ``bellhook.commands`` (webhooks, events, deliveries, recover)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
import uvloop
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from bellhook import __version__
from bellhook.commands import deliveries, events, recover, webhooks
from bellhook.commands.common import EXIT_CODES
from bellhook.config import Settings
from bellhook.errors import BellhookError
from bellhook.logs import configure_logging
from bellhook.runtime import Runtime, open_runtime, utc_now

T = TypeVar("T")

app = typer.Typer(
    name="bellhook",
    help="bellhook: webhook delivery for Bellamy Book.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion
    rich_markup_mode=None,  # help texts show "[env BELLHOOK_...]" literally
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
secrets_app = typer.Typer(help="Webhook signing secrets at rest.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")
# Client commands: they call a running service through bellhook.Client.
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(events.app, name="events")
app.add_typer(deliveries.app, name="deliveries")
err = Console(stderr=True)

DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///path.db or postgresql://user@host/db [env BELLHOOK_DATABASE_URL]",
        show_default=False,
    ),
]

DevOpt = Annotated[
    bool | None,
    typer.Option(
        "--dev",
        help="development mode: allow http:// and local targets [env BELLHOOK_DEV_MODE]",
        show_default=False,
    ),
]
LogLevelOpt = Annotated[str | None, typer.Option(help="[env BELLHOOK_LOG_LEVEL]")]
MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        help="serve /metrics, /healthz and /readyz on this port [env BELLHOOK_METRICS_PORT]",
        show_default=False,
    ),
]


def load_settings(**overrides: Any) -> Settings:
    """Environment first, then the flags that were given on the command line."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        err.print(f"[red]bellhook: invalid configuration: {problems}[/red]")
        raise typer.Exit(2) from exc


def tune_gc() -> None:
    """Collect cycles less often in the long-running commands (serve, worker).

    Nearly everything on the delivery path is freed by reference counting; with the
    default threshold (700 allocations) a collection ran every few deliveries and cost
    5-8% of the worker's CPU. Larger generations keep the same safety net.
    """
    gc.set_threshold(20_000, 50, 100)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``main`` on a uvloop event loop; a BellhookError is one red line and exit 1."""
    try:
        # uvloop, as uvicorn uses for serve: the worker's event loop is its hot path.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    except BellhookError as exc:
        err.print(f"[red]bellhook: {exc.message}[/red]")
        raise typer.Exit(1) from exc


def run_with_runtime(settings: Settings, action: Callable[[Runtime], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_runtime(settings) as rt:
            return await action(rt)

    return run_async(main())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="[env BELLHOOK_HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="[env BELLHOOK_PORT, default 8080]")] = None,
    database_url: DatabaseOpt = None,
    dev: DevOpt = None,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="run the dispatcher in this process [env BELLHOOK_WORKER]",
            show_default=False,
        ),
    ] = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Serve the HTTP API (and, by default, deliver webhooks).

    \b
    Example: bellhook serve --port 8080 --database-url postgresql://bellhook@db/bellhook
    (add --dev to let webhooks target http:// and local addresses while developing)
    """
    import uvicorn

    from bellhook.api.app import create_app

    settings = load_settings(
        host=host,
        port=port,
        database_url=database_url,
        dev_mode=dev,
        worker=worker,
        log_level=log_level,
    )
    configure_logging(settings.log_level, settings.log_format)
    tune_gc()
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
    )
    uvicorn.Server(config).run()


@app.command()
def worker(
    database_url: DatabaseOpt = None,
    dev: DevOpt = None,
    processes: Annotated[
        int | None,
        typer.Option(
            help="delivery processes, one core each; the concurrency limits are split "
            "between them [env BELLHOOK_WORKER_PROCESSES, default 1]",
            show_default=False,
        ),
    ] = None,
    log_level: LogLevelOpt = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Deliver webhooks without serving the API (run `serve --no-worker` beside it).

    \b
    Example: bellhook worker --processes 2 --metrics-port 9100
    """
    import signal

    from bellhook.delivery.dispatcher import Dispatcher

    settings = load_settings(
        database_url=database_url,
        dev_mode=dev,
        worker_processes=processes,
        log_level=log_level,
        metrics_port=metrics_port,
    )
    configure_logging(settings.log_level, settings.log_format)
    if settings.worker_processes > 1:
        from bellhook.supervisor import child_environments, supervise

        try:
            child_environments(settings, settings.worker_processes, {})  # the limits split
        except BellhookError as exc:
            err.print(f"[red]bellhook: {exc.message}[/red]")
            raise typer.Exit(2) from exc
        # Migrates once, and fails early if it can't, before any child starts.
        raise typer.Exit(run_with_runtime(settings, lambda rt: supervise(settings, rt)))

    tune_gc()

    async def deliver(rt: Runtime) -> None:
        dispatcher = Dispatcher(rt, rt.sender)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, dispatcher.stop)
        async with operations_port(rt):
            await dispatcher.run()

    run_with_runtime(settings, deliver)


@app.command()
def consume(
    bootstrap_servers: Annotated[
        str | None,
        typer.Option(
            help="host:port,... [env BELLHOOK_KAFKA_BOOTSTRAP_SERVERS]", show_default=False
        ),
    ] = None,
    group: Annotated[
        str | None, typer.Option(help="[env BELLHOOK_KAFKA_GROUP, default bellhook]")
    ] = None,
    topics: Annotated[
        str | None,
        typer.Option(help="comma-separated [env BELLHOOK_KAFKA_TOPICS, default bellamy.events]"),
    ] = None,
    database_url: DatabaseOpt = None,
    log_level: LogLevelOpt = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Consume events from Kafka into deliveries (run `worker` to send them).

    \b
    Example: bellhook consume --bootstrap-servers kafka-1:9092 --topics bellamy.events
    """
    import signal

    from bellhook.ingest.consumer import KafkaIngest

    settings = load_settings(
        kafka_bootstrap_servers=bootstrap_servers,
        kafka_group=group,
        kafka_topics=topics,
        database_url=database_url,
        log_level=log_level,
        metrics_port=metrics_port,
    )
    configure_logging(settings.log_level, settings.log_format)
    if not settings.kafka_bootstrap_servers:
        err.print(
            "[red]bellhook: set BELLHOOK_KAFKA_BOOTSTRAP_SERVERS (or --bootstrap-servers)[/red]"
        )
        raise typer.Exit(2)
    tune_gc()

    async def run(rt: Runtime) -> None:
        ingest = KafkaIngest(rt)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, ingest.stop)
        async with operations_port(rt):
            await ingest.run()

    run_with_runtime(settings, run)


@app.command()
def migrate(database_url: DatabaseOpt = None) -> None:
    """Bring the database schema up to date (serve and worker also do this on start).

    \b
    Example: BELLHOOK_DATABASE_URL=postgresql://bellhook@db/bellhook bellhook migrate
    """
    settings = load_settings(database_url=database_url)
    run_with_runtime(settings, _nothing)
    typer.echo("database is up to date")


async def _nothing(_rt: Runtime) -> None:
    return None


@contextlib.asynccontextmanager
async def operations_port(rt: Runtime) -> AsyncIterator[None]:
    """/metrics, /healthz and /readyz on BELLHOOK_METRICS_PORT, when it is set."""
    if rt.settings.metrics_port is None:
        yield
        return
    from bellhook.observability.server import serving_operations

    async with serving_operations(rt, port=rt.settings.metrics_port):
        yield


@app.command()
def listen(
    secret: Annotated[
        list[str] | None,
        typer.Option(
            help="the webhook's secret; give it twice during a rotation, either one "
            "verifies [env BELLHOOK_LISTEN_SECRET, several separated by spaces]",
            metavar="SECRET",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="0 picks a free port", min=0, max=65535)] = 4000,
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
    path: Annotated[
        str | None,
        typer.Option(help="answer deliveries on this path only (default: any path)"),
    ] = None,
    forward_to: Annotated[
        str | None,
        typer.Option(
            help="send each verified delivery (same body and headers) to this URL and "
            "answer with its status and body",
            metavar="URL",
            show_default=False,
        ),
    ] = None,
    tolerance: Annotated[
        int, typer.Option(help="seconds webhook-timestamp may be away from now", min=0)
    ] = 300,
    json_lines: Annotated[
        bool,
        typer.Option("--json", help="one JSON line per delivery on stdout, for scripts"),
    ] = False,
) -> None:
    """Receive deliveries locally: verify, print and answer them (for development).

    Every POST must pass each signature scheme whose headers it carries
    (X-Webhook-Signature, Standard Webhooks) and carry one; it is answered 200,
    or 401 when a signature is missing or wrong. Stop it with Ctrl-C.

    \b
    Example, with bellhook running as `bellhook serve --dev`:
      bellhook listen --port 4000 --secret "$SECRET" --forward-to http://127.0.0.1:3000/webhook
    then create a webhook with the url http://127.0.0.1:4000/ and that secret.
    """
    import os

    from bellhook.listen import ListenOptions
    from bellhook.listen import listen as serve_listener

    secrets = list(secret or os.environ.get("BELLHOOK_LISTEN_SECRET", "").split())
    if not secrets or not all(secrets):
        err.print(
            "[red]bellhook: give the webhook's secret: --secret or BELLHOOK_LISTEN_SECRET[/red]"
        )
        raise typer.Exit(2)
    if path is not None and not path.startswith("/"):
        err.print("[red]bellhook: --path must start with /[/red]")
        raise typer.Exit(2)
    if forward_to is not None and not forward_to.startswith(("http://", "https://")):
        err.print("[red]bellhook: --forward-to must be an http:// or https:// URL[/red]")
        raise typer.Exit(2)
    options = ListenOptions(
        secrets=secrets,
        host=host,
        port=port,
        path=path,
        forward_to=forward_to,
        tolerance=tolerance,
        json_lines=json_lines,
    )
    try:
        asyncio.run(serve_listener(options, Console(soft_wrap=True), err))
    except OSError as exc:
        err.print(f"[red]bellhook: cannot listen on {host}:{port}: {exc.strerror or exc}[/red]")
        raise typer.Exit(1) from exc


@app.command()
def demo(
    once: Annotated[
        bool, typer.Option("--once", help="exit when the deliveries are shown (for scripts)")
    ] = False,
    port: Annotated[int, typer.Option(help="bellhook's port (0: any free one)")] = 0,
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for every delivery", show_default=True)
    ] = 60.0,
) -> None:
    """See bellhook deliver: in dev mode, on a temporary database, to a local receiver.

    Publishes one event of each type, shows each delivery arriving with both
    signatures verified and a failed attempt being retried, then keeps running for you
    to try the API until Ctrl-C, which removes everything.

    Example: bellhook demo
    """
    from bellhook.demo import run_demo

    configure_logging("warning", "console")
    out = Console(soft_wrap=True)  # a line a delivery, whatever the terminal's width
    raise typer.Exit(run_async(run_demo(out, once=once, port=port, wait_up_to=timeout)))


@app.command()
def version() -> None:
    """Print bellhook's version.

    Example: bellhook version
    """
    typer.echo(__version__)


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Option(help="owner id the key acts for", min=1)],
    admin: Annotated[
        bool, typer.Option("--admin", help="may publish events and manage all webhooks")
    ] = False,
    name: Annotated[str | None, typer.Option(help="a label for the key")] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Create an API key; the key itself is printed alone on the last line.

    \b
    Example: KEY=$(bellhook keys create --owner acme --name ci | tail -1)
    """
    if not owner.strip() or len(owner) > 255:
        err.print("[red]bellhook: --owner must be 1 to 255 characters[/red]")
        raise typer.Exit(2)
    settings = load_settings(database_url=database_url)

    async def create(rt: Runtime) -> tuple[str, str]:
        key, token = await rt.keys.create(owner, is_admin=admin, name=name, now=utc_now())
        return key.id, token

    key_id, token = run_with_runtime(settings, create)
    kind = "admin key" if admin else "key"
    typer.echo(f"created {kind} {key_id} for owner {owner}; store it now, it is shown only once:")
    typer.echo(token)


@keys_app.command("list")
def keys_list(
    owner: Annotated[str | None, typer.Option(help="only this owner's keys")] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """List API keys (never the keys themselves).

    Example: bellhook keys list --owner acme
    """
    settings = load_settings(database_url=database_url)
    keys = run_with_runtime(settings, lambda rt: rt.keys.list(owner))
    table = Table("id", "owner", "admin", "name", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.id,
            k.owner_id,
            "yes" if k.is_admin else "",
            k.name or "",
            k.created_at.isoformat(timespec="seconds"),
            k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "",
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    Console(width=200).print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, database_url: DatabaseOpt = None) -> None:
    """Revoke an API key: calls with it get 401 from now on.

    Example: bellhook keys revoke key_0hov2l… (the id `bellhook keys list` shows)
    """
    settings = load_settings(database_url=database_url)
    run_with_runtime(settings, lambda rt: rt.keys.revoke(key_id, now=utc_now()))
    typer.echo(f"revoked {key_id}")


@secrets_app.command("reencrypt")
def secrets_reencrypt(database_url: DatabaseOpt = None) -> None:
    """Re-encrypt every stored webhook secret with the first BELLHOOK_ENCRYPTION_KEY.

    After putting a new key first in BELLHOOK_ENCRYPTION_KEY (old keys after it), run
    this once; then the old keys can be removed. Plain (unencrypted) secrets are
    encrypted too. Safe to run while bellhook is serving, and to run again.

    \b
    Example: BELLHOOK_ENCRYPTION_KEY="$NEW_KEY,$OLD_KEY" bellhook secrets reencrypt
    """
    settings = load_settings(database_url=database_url)
    if settings.encryption_key is None:
        err.print(
            "[red]bellhook: set BELLHOOK_ENCRYPTION_KEY (new key first, old keys after it) "
            "to re-encrypt secrets[/red]"
        )
        raise typer.Exit(2)
    done = run_with_runtime(settings, lambda rt: rt.webhooks.reencrypt_secrets())
    typer.echo(
        f"re-encrypted the secrets of {done.changed} of {done.webhooks} webhooks with the first "
        "key; every stored secret now opens with it alone"
    )


app.command("recover")(recover.recover)  # a client command, listed after the others


def main() -> None:
    app()
