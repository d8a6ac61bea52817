"""Receivers cannot hurt the dispatcher: the real Sender against raw TCP servers.

Each receiver is an ``asyncio`` server on 127.0.0.1 that misbehaves on purpose:
an endless body, a body trickled byte by byte, headers that never end or are
gigantic. The sender must come back with a clean ``AttemptResult`` (never raise,
never hang): it reads at most 64 KiB of a body, and the total deadline of the
request cuts off a trickle. Every call is wrapped in an outer bound far above
the deadline, so a regression fails instead of hanging the suite; the tests
assert that the sender returned, not how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from bellhook.delivery.resolver import DestinationGuard
from bellhook.delivery.sender import MAX_RESPONSE_BYTES, Sender, SignedRequest
from bellhook.domain.destination import DestinationPolicy
from bellhook.domain.models import ErrorKind
from bellhook.domain.outcome import EXCERPT_BYTES, AttemptResult

DEADLINE = 1.0  # the sender's total timeout in these tests
OUTER_BOUND = 60.0  # only so that a regression fails instead of hanging

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Receiver"], Awaitable[None]]


@dataclass
class Receiver:
    port: int = 0
    requests: int = 0
    sent: int = 0  # bytes the receiver managed to write
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)


class LoopbackOnly:
    """The only resolver the sender gets: every name is 127.0.0.1 (none is used)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        return ["127.0.0.1"]


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    guard = DestinationGuard(DestinationPolicy(dev_mode=True), LoopbackOnly())
    s = Sender(guard, timeout=DEADLINE, max_connections=8)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@contextlib.asynccontextmanager
async def hostile(handler: Handler) -> AsyncIterator[Receiver]:
    state = Receiver()
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")  # the request head; the body is small
            state.requests += 1
            await handler(reader, writer, state)
        except (ConnectionError, asyncio.IncompleteReadError):
            state.client_gone.set()
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def write(writer: asyncio.StreamWriter, state: Receiver, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    state.sent += len(data)


async def send(sender: Sender, receiver: Receiver) -> AttemptResult:
    request = SignedRequest(
        url=f"http://127.0.0.1:{receiver.port}/hook",
        body=b'{"event":"post.created"}',
        headers={"Content-Type": "application/json"},
    )
    async with asyncio.timeout(OUTER_BOUND):
        return await sender.send(request, started_at=datetime.now(UTC))


# --- bodies ---------------------------------------------------------------------------------


async def endless_body(
    _reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Receiver
) -> None:
    await write(writer, state, b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
    while True:  # until the client hangs up
        await write(writer, state, b"x" * 65536)


async def endless_chunked_body(
    _reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Receiver
) -> None:
    await write(writer, state, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        await write(writer, state, b"10000\r\n" + b"y" * 0x10000 + b"\r\n")


@pytest.mark.parametrize("handler", [endless_body, endless_chunked_body], ids=["length", "chunked"])
async def test_a_body_larger_than_64_kib_is_cut_off(sender: Sender, handler: Handler) -> None:
    async with hostile(handler) as receiver:
        result = await send(sender, receiver)
        # The body never ends, so returning at all means the sender stopped reading;
        # it also hung up rather than draining the rest.
        async with asyncio.timeout(OUTER_BOUND):
            await receiver.client_gone.wait()
    assert result.status_code == 200
    assert result.error_kind is None and result.succeeded
    assert result.response_excerpt is not None
    assert len(result.response_excerpt) == EXCERPT_BYTES
    assert set(result.response_excerpt) <= {"x", "y"}
    assert receiver.sent > MAX_RESPONSE_BYTES
    assert receiver.requests == 1


async def test_a_body_of_exactly_64_kib_is_read_whole(sender: Sender) -> None:
    async def exact(_r: asyncio.StreamReader, w: asyncio.StreamWriter, state: Receiver) -> None:
        body = b"z" * MAX_RESPONSE_BYTES
        await write(w, state, b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n" % len(body))
        await write(w, state, body)

    async with hostile(exact) as receiver:
        result = await send(sender, receiver)
    assert (result.status_code, result.error_kind) == (202, None)


# --- trickling receivers ---------------------------------------------------------------------


async def trickled_body(
    _reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Receiver
) -> None:
    await write(writer, state, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    while True:
        await write(writer, state, b"t")
        await asyncio.sleep(0.05)  # the receiver's pace, not the test waiting


async def trickled_head(
    _reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Receiver
) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: ":
        await write(writer, state, bytes([byte]))
        await asyncio.sleep(0.05)
    while True:
        await write(writer, state, b"s")
        await asyncio.sleep(0.05)


async def silent(
    reader: asyncio.StreamReader, _writer: asyncio.StreamWriter, state: Receiver
) -> None:
    await reader.read()  # accepts the request and never answers, until the client hangs up
    state.client_gone.set()


@pytest.mark.parametrize(
    "handler", [trickled_body, trickled_head, silent], ids=["body", "head", "silent"]
)
async def test_a_trickling_receiver_is_cut_off_by_the_total_deadline(
    sender: Sender, handler: Handler
) -> None:
    async with hostile(handler) as receiver:
        result = await send(sender, receiver)
        async with asyncio.timeout(OUTER_BOUND):
            await receiver.client_gone.wait()  # the sender hung up on it
    assert result.error_kind is ErrorKind.TIMEOUT
    assert result.status_code is None
    assert result.error_message == f"no complete answer within {DEADLINE:g} s"
    assert receiver.requests == 1


# --- gigantic headers -------------------------------------------------------------------------


def respond_with(head: bytes) -> Handler:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Receiver
    ) -> None:
        await write(writer, state, head)
        await reader.read()

    return handler


async def endless_header(
    _reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Receiver
) -> None:
    await write(writer, state, b"HTTP/1.1 200 OK\r\nX-Endless: ")
    while True:
        await write(writer, state, b"e" * 65536)


OK = b"HTTP/1.1 200 OK\r\n"
END = b"Content-Length: 0\r\n\r\n"
GIGANTIC: list[tuple[str, Handler]] = [
    ("one 1 MiB header", respond_with(OK + b"X-Big: " + b"a" * 1024 * 1024 + b"\r\n" + END)),
    ("1 MiB header name", respond_with(OK + b"X" * 1024 * 1024 + b": v\r\n" + END)),
    ("1 MiB status line", respond_with(b"HTTP/1.1 200 " + b"O" * 1024 * 1024 + b"\r\n" + END)),
    ("a header that never ends", endless_header),
]


@pytest.mark.parametrize("handler", [g[1] for g in GIGANTIC], ids=[g[0] for g in GIGANTIC])
async def test_gigantic_headers_fail_cleanly_as_too_large(sender: Sender, handler: Handler) -> None:
    async with hostile(handler) as receiver:
        result = await send(sender, receiver)
    assert result.error_kind is ErrorKind.TOO_LARGE
    assert result.status_code is None
    assert result.error_message == "the response headers are too large"
    assert receiver.requests == 1


@pytest.mark.parametrize(
    "head",
    [
        OK + b"".join(b"X-H%d: v\r\n" % n for n in range(100_000)) + END,
        OK + b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 8000) for n in range(130)) + END,
    ],
    ids=["100k tiny headers", "130 headers of 8 KB"],
)
async def test_too_many_headers_fail_cleanly_as_too_large(sender: Sender, head: bytes) -> None:
    async with hostile(respond_with(head)) as receiver:
        result = await send(sender, receiver)
    assert result.status_code is None
    assert result.error_kind is ErrorKind.TOO_LARGE


async def test_the_sender_still_works_after_the_hostile_ones(sender: Sender) -> None:
    """Nothing above left the shared client session broken."""
    for handler in (endless_body, silent, endless_header):
        async with hostile(handler) as receiver:
            await send(sender, receiver)

    async with hostile(respond_with(OK + b"Content-Length: 2\r\n\r\nok")) as receiver:
        result = await send(sender, receiver)
    assert (result.status_code, result.error_kind, result.response_excerpt) == (200, None, "ok")
