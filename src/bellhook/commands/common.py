"""What the client commands share: the connection options, running one call of the async
``Client``, printing tables or JSON, and turning a failed call into one line and an
exit code.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bellhook.api.schemas import AttemptOutcome
    from bellhook.client import ApiError, Client

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"

# The exit codes, as `bellhook --help` and the README document them.
OK = 0
API_FAILED = 1  # the API refused (4xx but those below) or failed (5xx), or what it did failed
USAGE = 2  # Typer's own usage errors, and input the command cannot use (invalid JSON, …)
UNREACHABLE = 3  # no answer: connection refused, name not resolved, timeout
NOT_FOUND = 4  # 404
UNAUTHORIZED = 5  # 401 or 403

EXIT_CODES = """\b
Client commands (webhooks, events, deliveries, recover) call a running service:
--url or BELLHOOK_URL (default http://127.0.0.1:8080), --api-key or BELLHOOK_API_KEY.
Each prints a table, or JSON with --json.

\b
Exit codes:
  0  done
  1  the API refused the call (4xx other than below) or failed (5xx), or what it
     did failed (a test or retry attempt, an event of a batch it rejected)
  2  usage error or bad input (an unknown option, invalid JSON in --data, ...)
  3  cannot reach the service (connection refused, unknown host, timeout)
  4  not found (404: no such webhook or delivery for this key)
  5  unauthorized or forbidden (401, 403: no key, a wrong or revoked key, not admin)
"""

UrlOpt = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="BELLHOOK_URL",
        help="the bellhook service",
        metavar="URL",
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="BELLHOOK_API_KEY",
        help="the API key (prefer the environment variable: a flag shows in `ps`)",
        metavar="KEY",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="print JSON on stdout, for scripts"),
]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Target:
    """Where a command calls, with which key, and how it prints."""

    url: str
    api_key: str | None
    as_json: bool = False


def fail(message: str, code: int) -> NoReturn:
    """One red line on stderr, then exit with ``code``."""
    err.print(f"[red]bellhook: {escape(message)}[/red]")
    raise typer.Exit(code)


def exit_code(exc: ApiError) -> int:
    from bellhook.client import (
        ApiConnectionError,
        AuthenticationError,
        ForbiddenError,
        NotFoundError,
    )

    if isinstance(exc, ApiConnectionError):
        return UNREACHABLE
    if isinstance(exc, NotFoundError):
        return NOT_FOUND
    if isinstance(exc, AuthenticationError | ForbiddenError):
        return UNAUTHORIZED
    return API_FAILED


def explain(exc: ApiError, target: Target) -> str:
    """The error's own line, with a hint when the fix is on this side."""
    from bellhook.client import ApiConnectionError, AuthenticationError

    line = str(exc)
    if isinstance(exc, ApiConnectionError):
        return f"{line} (is bellhook serving there? --url or BELLHOOK_URL)"
    if isinstance(exc, AuthenticationError) and target.api_key is None:
        return f"{line} (give an API key: --api-key or BELLHOOK_API_KEY)"
    return line


def run(target: Target, action: Callable[[Client], Awaitable[T]]) -> T:
    """``action`` with a ``Client`` for ``target``, on a new event loop; a failed call
    exits with its one line on stderr and its exit code."""
    from bellhook.client import ApiError, Client

    if not target.url.startswith(("http://", "https://")):
        fail(f"--url must be an http:// or https:// URL, not {target.url!r}", USAGE)
    from bellhook.client._async import InvalidUrl

    try:
        client = Client(target.url, target.api_key)
    except InvalidUrl as exc:
        fail(f"--url: {exc}", USAGE)
    except ValueError:
        # The key itself is never repeated.
        fail("the API key must be printable ASCII without spaces", USAGE)

    async def main() -> T:
        async with client:
            return await action(client)

    try:
        return asyncio.run(main())
    except ApiError as exc:
        fail(explain(exc, target), exit_code(exc))


# --- printing ------------------------------------------------------------------------


def dump(model: BaseModel) -> dict[str, Any]:
    """A result as the API wrote it (camelCase, ISO timestamps)."""
    return model.model_dump(mode="json", by_alias=True)


def print_json(value: Any, *, indent: int | None = 2) -> None:
    sys.stdout.write(json.dumps(value, indent=indent, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(*columns)
    for row in rows:
        table.add_row(*(escape("" if cell is None else str(cell)) for cell in row))
    # Piped, rich would cut the table at 80 columns; ids must survive whole.
    console = out if out.is_terminal else Console(highlight=False, width=250)
    console.print(table)


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    """One ``name  value`` line per field (a record, as `show` prints it)."""
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        text = "" if value is None else str(value)
        out.print(f"[bold]{name.ljust(width)}[/bold]  {escape(text)}")


def outcome_line(outcome: AttemptOutcome) -> str:
    """How an attempt made now (test, retry) went."""
    result = f"{outcome.status_code}" if outcome.status_code is not None else "no answer"
    latency = f"{outcome.latency_ms:.0f} ms"
    if outcome.success:
        return f"delivered: {result} in {latency} (delivery {outcome.delivery_id})"
    why = outcome.error or "error"
    if outcome.error_message:
        why = f"{why}: {outcome.error_message}"
    return f"failed: {result} in {latency}, {why} (delivery {outcome.delivery_id})"


def print_outcome(target: Target, outcome: AttemptOutcome) -> None:
    """The attempt's outcome; exits 1 when it was not a success."""
    if target.as_json:
        print_json(dump(outcome))
    else:
        (out if outcome.success else err).print(escape(outcome_line(outcome)))
    if not outcome.success:
        raise typer.Exit(API_FAILED)


def split_list(values: Sequence[str] | None) -> list[str]:
    """``--events a,b --events c`` as ``[a, b, c]``."""
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]
