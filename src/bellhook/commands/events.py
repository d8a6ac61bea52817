"""``bellhook events publish``: one event from the command line, or many from an NDJSON
file in batches (admin keys)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bellhook.commands.common import (
    API_FAILED,
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
    print_json,
    run,
)

if TYPE_CHECKING:
    from bellhook.api.schemas import EventAccepted
    from bellhook.client import Client

MAX_BATCH = 1000  # the most POST /api/events/batch takes

app = typer.Typer(
    help="Publish events to a running service (admin API keys).\n\n"
    '\b\nExample:\n  bellhook events publish post.created --data \'{"id": "p1"}\'',
    no_args_is_help=True,
    rich_markup_mode=None,
)


def parse_data(value: str) -> dict[str, Any]:
    """``--data``: a JSON object, or ``@path`` to a file holding one."""
    source = "--data"
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        source = f"--data {value}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", USAGE)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{source} is not valid JSON: {exc}", USAGE)
    if not isinstance(data, dict):
        fail(f"{source} must be a JSON object, not {type(data).__name__}", USAGE)
    return data


def parse_audience(value: str | None) -> list[str] | str | None:
    if value is None:
        return None
    if value.strip() == "*":
        return "*"
    owners = [part.strip() for part in value.split(",") if part.strip()]
    if not owners:
        fail("--audience needs owner ids (a,b) or *", USAGE)
    return owners


@app.command("publish")
def publish(
    event: Annotated[
        str | None,
        typer.Argument(
            metavar="TYPE", help="the event type, e.g. post.created", show_default=False
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            metavar="JSON|@FILE",
            help="the event's data: a JSON object, or @file.json (default {})",
            show_default=False,
        ),
    ] = None,
    event_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="the event's id: publishing it again is a no-op (default: a new one)",
            show_default=False,
        ),
    ] = None,
    audience: Annotated[
        str | None,
        typer.Option(
            metavar="OWNERS",
            help="owner ids whose webhooks receive it, comma-separated, or * for every owner "
            "(default: only webhooks of admin keys)",
            show_default=False,
        ),
    ] = None,
    from_file: Annotated[
        str | None,
        typer.Option(
            "--from-file",
            metavar="NDJSON",
            help="publish every line of this file (- for stdin), each an event "
            '{"event", "data", "id"?, "timestamp"?, "audience"?}, in batches',
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="events per call with --from-file", min=1, max=MAX_BATCH)
    ] = MAX_BATCH,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish one event, or every event of an NDJSON file (admin keys).

    With --from-file, a progress bar runs on stderr (not with --json), every rejected
    line is reported with its number and reason, and the exit code is 1 if any was.

    \b
    Examples:
      bellhook events publish post.created --data '{"id": "p1"}' --audience acme,globex
      bellhook events publish comment.created --data @comment.json --id comment-9-created
      bellhook events publish --from-file events.ndjson
    """
    target = Target(url, api_key, as_json)
    if from_file is not None:
        if event is not None or data is not None or event_id is not None or audience:
            fail("--from-file takes no TYPE, --data, --id or --audience: each line has its own",
                 USAGE)  # fmt: skip
        publish_file(target, from_file, batch_size)
        return
    if event is None:
        fail("give the event TYPE (e.g. post.created), or --from-file", USAGE)
    body = parse_data(data) if data is not None else {}
    owners = parse_audience(audience)

    async def send(client: Client) -> EventAccepted:
        return await client.publish(event, body, event_id=event_id, audience=owners)

    accepted = run(target, send)
    if as_json:
        print_json(dump(accepted))
    elif accepted.duplicate:
        out.print(f"duplicate: event {accepted.id} was accepted before; nothing new to deliver")
    else:
        plural = "y" if accepted.deliveries == 1 else "ies"
        out.print(f"published {event} {accepted.id}: {accepted.deliveries} deliver{plural}")


# --- NDJSON ---------------------------------------------------------------------------


@dataclass
class Batch:
    lines: list[int] = field(default_factory=list)  # the line number of each event
    events: list[Any] = field(default_factory=list)
    consumed: int = 0  # lines read for it, blank and unreadable ones too
    refused: list[dict[str, Any]] = field(default_factory=list)  # refused before sending


@dataclass
class Tally:
    accepted: int = 0
    deliveries: int = 0
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


def read_batches(stream: IO[bytes], size: int) -> Iterator[Batch]:
    """The file's events, ``size`` a batch; lines that are not JSON are refused here."""
    batch = Batch()
    for number, raw in enumerate(stream, start=1):
        batch.consumed += 1
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            batch.refused.append(
                {"line": number, "code": "invalid_json", "message": "the line is not UTF-8"}
            )
            continue
        if text:
            try:
                batch.events.append(json.loads(text))
                batch.lines.append(number)
            except json.JSONDecodeError as exc:
                batch.refused.append(
                    {"line": number, "code": "invalid_json", "message": f"not JSON: {exc}"}
                )
        if len(batch.events) >= size:
            yield batch
            batch = Batch()
    if batch.consumed:
        yield batch


def count_lines(path: Path) -> int | None:
    try:
        with path.open("rb") as stream:
            return sum(1 for _ in stream)
    except OSError:
        return None


def publish_file(target: Target, name: str, size: int) -> None:
    if name == "-":
        stream: IO[bytes] = sys.stdin.buffer
        total = None
    else:
        path = Path(name)
        try:
            stream = path.open("rb")
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror or exc}", USAGE)
        total = count_lines(path)
    tally = Tally()
    progress = Progress(
        TextColumn("publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeElapsedColumn(),
        console=err,
        disable=target.as_json,
    )

    async def send(client: Client) -> None:
        from bellhook.client import ApiError

        task = progress.add_task("publish", total=total)
        for batch in read_batches(stream, size):
            tally.errors.extend(batch.refused)
            if batch.events:
                try:
                    result = await client.publish_batch(batch.events)
                except ApiError as exc:
                    if tally.accepted:
                        exc.message = f"{exc.message} (after {tally.accepted} events accepted)"
                    raise
                tally.accepted += result.accepted
                for line, item in zip(batch.lines, result.results, strict=False):
                    if item.error is not None:
                        tally.errors.append(
                            {"line": line, "code": item.error.code, "message": item.error.message}
                        )
                    else:
                        tally.deliveries += item.deliveries or 0
                        tally.duplicates += 1 if item.duplicate else 0
            progress.advance(task, batch.consumed)

    try:
        with progress:
            run(target, send)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    tally.errors.sort(key=lambda e: int(e["line"]))
    if target.as_json:
        print_json(
            {
                "accepted": tally.accepted,
                "rejected": len(tally.errors),
                "deliveries": tally.deliveries,
                "duplicates": tally.duplicates,
                "errors": tally.errors,
            }
        )
    else:
        for error in tally.errors:
            err.print(f"line {error['line']}: {error['code']}: {error['message']}", markup=False)
        out.print(
            f"accepted {tally.accepted} events ({tally.duplicates} duplicates, "
            f"{tally.deliveries} deliveries), rejected {len(tally.errors)}"
        )
    if tally.errors:
        raise typer.Exit(API_FAILED)
