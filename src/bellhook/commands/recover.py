"""``bellhook recover``: resend every failed delivery of a webhook created since a time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from bellhook.commands.common import (
    DEFAULT_URL,
    USAGE,
    ApiKeyOpt,
    JsonOpt,
    Target,
    UrlOpt,
    dump,
    fail,
    out,
    print_json,
    run,
    when,
)

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
AGO = re.compile(r"(\d+)([smhdw])")


def parse_since(value: str, now: datetime) -> datetime:
    """``2h`` (30s, 15m, 2h, 3d, 1w: that long ago) or an ISO 8601 time (naive: UTC)."""
    text = value.strip()
    ago = AGO.fullmatch(text)
    if ago is not None:
        return now - timedelta(**{UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(
            f"--since must be a duration (30m, 2h, 3d) or an ISO 8601 time "
            f"(2026-01-31T12:00:00Z), not {value!r}",
            USAGE,
        )
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def recover(
    webhook_id: Annotated[
        str,
        typer.Argument(metavar="WEBHOOK_ID", help="the webhook's id (wh_...)", show_default=False),
    ],
    since: Annotated[
        str,
        typer.Option(
            help="how far back: a duration (30m, 2h, 3d, 1w) or an ISO 8601 time (naive: UTC)",
            metavar="WHEN",
            show_default=False,
        ),
    ],
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resend a webhook's failed deliveries since a time.

    Every failed delivery created since --since is scheduled again from its first
    retry step, e.g. once the receiver is back after an outage.

    \b
    Examples:
      bellhook recover wh_01J... --since 6h
      bellhook recover wh_01J... --since 2026-01-31T08:00:00Z
    """
    target = Target(url, api_key, as_json)
    start = parse_since(since, datetime.now(UTC))
    result = run(target, lambda client: client.recover(webhook_id, start))
    if as_json:
        print_json({**dump(result), "since": when(start)})
    else:
        plural = "y" if result.resent == 1 else "ies"
        out.print(
            f"rescheduled {result.resent} failed deliver{plural} of {webhook_id} created "
            f"since {when(start)}: they are sent again now"
        )
