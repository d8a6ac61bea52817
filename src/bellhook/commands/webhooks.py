"""``bellhook webhooks``: list, show, create, update, delete and test webhooks, and read or
rotate their signing secrets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from bellhook.commands.common import (
    DEFAULT_URL,
    USAGE,
    ApiKeyOpt,
    JsonOpt,
    Target,
    UrlOpt,
    dump,
    err,
    fail,
    out,
    print_fields,
    print_json,
    print_outcome,
    print_table,
    run,
    split_list,
    when,
)

if TYPE_CHECKING:
    from bellhook.api.schemas import SecretOut, WebhookOut
    from bellhook.client import Client

app = typer.Typer(
    help="Manage webhooks on a running service (those of the API key's owner).\n\n"
    "\b\nExample:\n  BELLHOOK_API_KEY=$KEY bellhook webhooks list",
    no_args_is_help=True,
    rich_markup_mode=None,
)

WebhookId = Annotated[
    str, typer.Argument(metavar="WEBHOOK_ID", help="the webhook's id (wh_...)", show_default=False)
]
EventsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--events",
        "-e",
        help="event types, comma-separated or repeated; * for every type",
        metavar="TYPES",
        show_default=False,
    ),
]


def webhook_fields(hook: WebhookOut) -> list[tuple[str, Any]]:
    return [
        ("id", hook.id),
        ("url", hook.url),
        ("events", ", ".join(hook.events)),
        ("status", hook.status),
        ("description", hook.description),
        ("disabled reason", hook.disabled_reason),
        ("created", when(hook.created_at)),
        ("updated", when(hook.updated_at)),
    ]


@app.command("list")
def list_webhooks(
    url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, as_json: JsonOpt = False
) -> None:
    """List the webhooks, newest first.

    \b
    Example:
      bellhook webhooks list --json | jq -r '.[].id'
    """
    target = Target(url, api_key, as_json)

    async def fetch(client: Client) -> list[WebhookOut]:
        return [hook async for hook in client.list_webhooks(limit=100)]

    hooks = run(target, fetch)
    if as_json:
        print_json([dump(h) for h in hooks])
        return
    print_table(
        ("id", "url", "events", "status", "description", "created"),
        [
            (h.id, h.url, ",".join(h.events), h.status, h.description, when(h.created_at))
            for h in hooks
        ],
    )


@app.command("show")
def show(
    webhook_id: WebhookId,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one webhook.

    \b
    Example:
      bellhook webhooks show wh_01J...
    """
    target = Target(url, api_key, as_json)
    hook = run(target, lambda client: client.get_webhook(webhook_id))
    if as_json:
        print_json(dump(hook))
    else:
        print_fields(webhook_fields(hook))


@app.command("create")
def create(
    endpoint: Annotated[
        str, typer.Argument(metavar="ENDPOINT_URL", help="where deliveries are POSTed")
    ],
    events: EventsOpt = None,
    secret: Annotated[
        str | None,
        typer.Option(
            help="the signing secret (16+ characters); one is generated and printed if absent",
            show_default=False,
        ),
    ] = None,
    description: Annotated[str | None, typer.Option(help="a label", show_default=False)] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a webhook. A generated secret is printed alone on the last line, once.

    \b
    Example:
      bellhook webhooks create https://your-app.com/webhook -e post.created,comment.created
    """
    types = split_list(events)
    if not types:
        fail("give the event types to deliver: --events post.created,... (or *)", USAGE)
    target = Target(url, api_key, as_json)
    hook = run(
        target,
        lambda client: client.create_webhook(
            endpoint, types, secret=secret, description=description
        ),
    )
    if as_json:
        print_json(dump(hook))
        return
    out.print(f"created webhook {hook.id} for {hook.url} ({', '.join(hook.events)})")
    if hook.secret is not None:
        out.print(f"its signing secret (again at any time: bellhook webhooks secret {hook.id}):")
        out.print(hook.secret)


@app.command("update")
def update(
    webhook_id: WebhookId,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", metavar="URL", help="a new endpoint URL", show_default=False),
    ] = None,
    events: EventsOpt = None,
    description: Annotated[
        str | None, typer.Option(help="a new label ('' removes it)", show_default=False)
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="active or disabled (active re-enables an auto-disabled webhook)",
            metavar="STATUS",
            show_default=False,
        ),
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a webhook: only the fields given change.

    \b
    Example:
      bellhook webhooks update wh_01J... --endpoint https://new-url.com/webhook --status active
    """
    types = split_list(events) if events is not None else None
    if status not in (None, "active", "disabled"):
        fail(f"--status must be active or disabled, not {status!r}", USAGE)
    new_status: Literal["active", "disabled"] | None = (
        "active" if status == "active" else "disabled" if status == "disabled" else None
    )
    if endpoint is None and types is None and description is None and new_status is None:
        fail("nothing to change: give --endpoint, --events, --description or --status", USAGE)
    if types is not None and not types:
        fail("--events needs at least one event type", USAGE)
    target = Target(url, api_key, as_json)

    async def change(client: Client) -> WebhookOut:
        if description is None:
            return await client.update_webhook(
                webhook_id, url=endpoint, events=types, status=new_status
            )
        return await client.update_webhook(
            webhook_id,
            url=endpoint,
            events=types,
            status=new_status,
            description=description or None,
        )

    hook = run(target, change)
    if as_json:
        print_json(dump(hook))
        return
    out.print(f"updated webhook {hook.id}")
    print_fields(webhook_fields(hook))


@app.command("delete")
def delete(
    webhook_id: WebhookId,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a webhook: it receives nothing from now on.

    \b
    Example:
      bellhook webhooks delete wh_01J...
    """
    target = Target(url, api_key, as_json)
    run(target, lambda client: client.delete_webhook(webhook_id))
    if as_json:
        print_json({"id": webhook_id, "deleted": True})
    else:
        out.print(f"deleted webhook {webhook_id}")


@app.command("test")
def test(
    webhook_id: WebhookId,
    event: Annotated[str, typer.Option(help="the sample event type to send")] = "post.created",
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a signed sample event to the webhook now; exit 1 if it is not answered 2xx.

    \b
    Example:
      bellhook webhooks test wh_01J... --event comment.created
    """
    target = Target(url, api_key, as_json)
    outcome = run(target, lambda client: client.test_webhook(webhook_id, event))
    print_outcome(target, outcome)


def print_secret(target: Target, secret: SecretOut) -> None:
    if target.as_json:
        print_json(dump(secret))
        return
    if secret.previous_secret_expires_at is not None:
        err.print(
            "the previous secret also signs deliveries until "
            f"{when(secret.previous_secret_expires_at)}"
        )
    out.print(secret.secret)


@app.command("secret")
def secret(
    webhook_id: WebhookId,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the webhook's signing secret: printing it is what this command is for, so
    mind where its output goes.

    \b
    Example:
      bellhook listen --secret "$(bellhook webhooks secret wh_01J...)"
    """
    target = Target(url, api_key, as_json)
    print_secret(target, run(target, lambda client: client.get_secret(webhook_id)))


@app.command("rotate-secret")
def rotate_secret(
    webhook_id: WebhookId,
    new_secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            help="the new secret (16+ characters); generated if absent",
            show_default=False,
        ),
    ] = None,
    keep_previous_for: Annotated[
        int | None,
        typer.Option(
            help="seconds the old secret keeps signing beside the new one, up to 604800 "
            "(the API's default: 86400, a day)",
            metavar="SECONDS",
            min=0,
            show_default=False,
        ),
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give the webhook a new signing secret, and print it.

    The old secret keeps signing deliveries beside the new one for --keep-previous-for
    seconds, time for the receiver to switch.

    \b
    Example:
      bellhook webhooks rotate-secret wh_01J... --keep-previous-for 3600
    """
    target = Target(url, api_key, as_json)
    rotated = run(
        target,
        lambda client: client.rotate_secret(
            webhook_id, secret=new_secret, grace_seconds=keep_previous_for
        ),
    )
    print_secret(target, rotated)
