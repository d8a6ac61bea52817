"""``bellhook deliveries``: a webhook's delivery log (list, show), resending one (retry),
and following new deliveries as they happen (tail)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from bellhook.commands.common import (
    DEFAULT_URL,
    OK,
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
    when,
)

if TYPE_CHECKING:
    from bellhook.api.schemas import DeliveryDetail, DeliveryOut
    from bellhook.client import Client

app = typer.Typer(
    help="Delivery logs: list, show, retry, tail (follow live).\n\n"
    "\b\nExample:\n  bellhook deliveries list wh_01J... --status failed",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Status = Literal["pending", "succeeded", "failed"]
STATUSES: tuple[Status, ...] = ("pending", "succeeded", "failed")

WebhookId = Annotated[
    str, typer.Argument(metavar="WEBHOOK_ID", help="the webhook's id (wh_...)", show_default=False)
]
DeliveryId = Annotated[
    str, typer.Argument(metavar="DELIVERY_ID", help="the delivery's id", show_default=False)
]
StatusOpt = Annotated[
    str | None,
    typer.Option(help="only pending, succeeded or failed ones", metavar="STATUS",
                 show_default=False),
]  # fmt: skip
EventOpt = Annotated[
    str | None, typer.Option(help="only this event type", metavar="TYPE", show_default=False)
]


def status_filter(status: str | None) -> Status | None:
    if status is None:
        return None
    for known in STATUSES:
        if status == known:
            return known
    fail(f"--status must be pending, succeeded or failed, not {status!r}", USAGE)


def last_result(d: DeliveryOut) -> str:
    if d.last_status_code is not None:
        return str(d.last_status_code)
    return d.last_error or ""


def delivery_row(d: DeliveryOut) -> tuple[str, ...]:
    return (
        d.id,
        d.event + (" (test)" if d.test else ""),
        d.status,
        str(d.attempt_count),
        last_result(d),
        when(d.next_attempt_at),
        when(d.created_at),
    )


COLUMNS = ("id", "event", "status", "attempts", "last result", "next attempt", "created")


@app.command("list")
def list_deliveries(
    webhook_id: WebhookId,
    status: StatusOpt = None,
    event: EventOpt = None,
    limit: Annotated[int, typer.Option(help="at most this many (0: all)", min=0)] = 50,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a webhook's deliveries, newest first.

    \b
    Example:
      bellhook deliveries list wh_01J... --status failed --limit 10
    """
    target = Target(url, api_key, as_json)
    wanted = status_filter(status)

    async def fetch(client: Client) -> list[DeliveryOut]:
        found: list[DeliveryOut] = []
        page = min(limit, 100) if limit else 100
        async for d in client.list_deliveries(webhook_id, status=wanted, event=event, limit=page):
            found.append(d)
            if limit and len(found) >= limit:
                break
        return found

    found = run(target, fetch)
    if as_json:
        print_json([dump(d) for d in found])
    else:
        print_table(COLUMNS, [delivery_row(d) for d in found])


@app.command("show")
def show(
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one delivery with every attempt.

    \b
    Example:
      bellhook deliveries show wh_01J... dl_01J...
    """
    target = Target(url, api_key, as_json)
    detail: DeliveryDetail = run(
        target, lambda client: client.get_delivery(webhook_id, delivery_id)
    )
    if as_json:
        print_json(dump(detail))
        return
    print_fields(
        [
            ("id", detail.id),
            ("event", detail.event),
            ("event id", detail.event_id),
            ("status", detail.status),
            ("attempts", detail.attempt_count),
            ("next attempt", when(detail.next_attempt_at)),
            ("test", "yes" if detail.test else "no"),
            ("created", when(detail.created_at)),
            ("updated", when(detail.updated_at)),
        ]
    )
    print_table(
        ("#", "started", "status code", "latency ms", "error", "manual", "response"),
        [
            (
                a.number,
                when(a.started_at),
                a.status_code,
                f"{a.latency_ms:.0f}",
                ": ".join(x for x in (a.error, a.error_message) if x),
                "yes" if a.manual else "",
                " ".join((a.response_body or "").split())[:60],
            )
            for a in detail.attempts
        ],
    )


@app.command("retry")
def retry(
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a delivery again now (its retry schedule is not consumed); exit 1 if the
    attempt is not answered 2xx.

    \b
    Example:
      bellhook deliveries retry wh_01J... dl_01J...
    """
    target = Target(url, api_key, as_json)
    outcome = run(target, lambda client: client.retry_delivery(webhook_id, delivery_id))
    print_outcome(target, outcome)


def tail_line(d: DeliveryOut) -> str:
    parts = [when(d.updated_at), d.id, d.event + (" (test)" if d.test else ""), d.status]
    parts.append(f"attempt {d.attempt_count}" if d.attempt_count else "no attempt yet")
    if last_result(d):
        parts.append(last_result(d))
    if d.next_attempt_at is not None and d.status == "pending":
        parts.append(f"next {when(d.next_attempt_at)}")
    return "  ".join(parts)


@app.command("tail")
def tail(
    webhook_id: WebhookId,
    interval: Annotated[
        float, typer.Option(help="seconds between polls", min=0.05, max=3600)
    ] = 1.0,
    count: Annotated[
        int | None,
        typer.Option(help="exit 0 once this many lines are printed", min=1, show_default=False),
    ] = None,
    status: StatusOpt = None,
    event: EventOpt = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Follow a webhook's deliveries live, until Ctrl-C (exit 0) or --count lines.

    Polls the newest page of the log every --interval seconds and prints each delivery
    created since it started, and again when a delivery's status or attempt count
    changes. With --json, one JSON object per line.

    \b
    Example:
      bellhook deliveries tail wh_01J... --status failed
    """
    target = Target(url, api_key, as_json)
    wanted = status_filter(status)

    async def follow(client: Client) -> None:
        seen: dict[str, tuple[str, int]] = {}
        first = True
        printed = 0
        while True:
            page = await client.list_deliveries_page(
                webhook_id, status=wanted, event=event, limit=100
            )
            changed: list[DeliveryOut] = []
            for d in page.items:
                state = (d.status, d.attempt_count)
                if seen.get(d.id) != state:
                    if not first:
                        changed.append(d)
                    seen[d.id] = state
            if first:
                err.print(f"following the deliveries of {webhook_id} (Ctrl-C to stop)")
                first = False
            for d in reversed(changed):  # oldest first, as a log reads
                if as_json:
                    print_json(dump(d), indent=None)
                else:
                    out.print(tail_line(d), markup=False)
                printed += 1
                if count is not None and printed >= count:
                    return
            await asyncio.sleep(interval)

    try:
        run(target, follow)
    except KeyboardInterrupt:
        raise typer.Exit(OK) from None
