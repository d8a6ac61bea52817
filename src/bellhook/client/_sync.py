"""``SyncClient``: ``Client``'s methods, blocking.

No second copy of the client: a ``SyncClient`` owns a ``Client`` on a private event
loop in a background thread, and each of its methods runs the ``Client`` method of the
same name there and waits for it (``_blocking``). The list iterators pull the async
iterator's items the same way, one page request at a time.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from bellhook.client._async import Client

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread, for coroutines sent from other threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="bellhook-client", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("the SyncClient is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: stop the call, not only the wait
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        if threading.current_thread() is self.thread:
            raise RuntimeError("a SyncClient cannot be closed from its own loop")
        # Calls still under way (from other threads) end with CancelledError, rather
        # than wait for ever on a loop that no longer runs.
        asyncio.run_coroutine_threadsafe(_cancel_others(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


_END = object()


async def _cancel_others() -> None:
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


async def _next(items: AsyncIterator[Any]) -> Any:
    return await anext(items, _END)


def _blocking(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[SyncClient, P], R]:
    """``Client.method`` as a blocking method of ``SyncClient``."""

    @functools.wraps(method)
    def call(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._loop.run(method(self._client, *args, **kwargs))

    return call


def _blocking_iter(
    method: Callable[Concatenate[Client, P], AsyncIterator[T]],
) -> Callable[Concatenate[SyncClient, P], Generator[T, None, None]]:
    """An async iterator method of ``Client`` as a ``SyncClient`` method giving an
    iterator (a generator: ``close()`` it to stop early)."""

    @functools.wraps(method)
    def call(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> Generator[T, None, None]:
        return self._iterate(method(self._client, *args, **kwargs))

    return call


async def _make_client(
    base_url: str,
    api_key: str | None,
    seconds: float,
    transport: httpx.AsyncBaseTransport | None,
) -> Client:
    # Made on the loop that will use it.
    return Client(base_url, api_key, timeout=seconds, transport=transport)


class SyncClient:
    """The bellhook API, blocking: the methods of ``Client``, without ``await``::

        with SyncClient("http://127.0.0.1:8080", api_key) as client:
            for hook in client.list_webhooks():
                print(hook.id, hook.url)

    ``transport`` is an httpx *async* transport, as for ``Client``. Safe to call from
    any thread, also one whose event loop is running.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 30,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._loop = _LoopThread()
        try:
            self._client = self._loop.run(_make_client(base_url, api_key, timeout, transport))
        except BaseException:
            self._loop.stop()
            raise
        self.base_url = self._client.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._client!r})"

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.loop.is_closed():
            self._loop.run(self._client.aclose())
        self._loop.stop()

    def _iterate(self, items: AsyncIterator[T]) -> Generator[T, None, None]:
        try:
            while (item := self._loop.run(_next(items))) is not _END:
                yield item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None and not self._loop.loop.is_closed():
                self._loop.run(aclose())

    list_webhooks = _blocking_iter(Client.list_webhooks)
    list_webhooks_page = _blocking(Client.list_webhooks_page)
    get_webhook = _blocking(Client.get_webhook)
    create_webhook = _blocking(Client.create_webhook)
    update_webhook = _blocking(Client.update_webhook)
    delete_webhook = _blocking(Client.delete_webhook)
    test_webhook = _blocking(Client.test_webhook)
    get_secret = _blocking(Client.get_secret)
    rotate_secret = _blocking(Client.rotate_secret)
    webhook_stats = _blocking(Client.webhook_stats)
    list_deliveries = _blocking_iter(Client.list_deliveries)
    list_deliveries_page = _blocking(Client.list_deliveries_page)
    get_delivery = _blocking(Client.get_delivery)
    retry_delivery = _blocking(Client.retry_delivery)
    recover = _blocking(Client.recover)
    publish = _blocking(Client.publish)
    publish_batch = _blocking(Client.publish_batch)
    event_types = _blocking(Client.event_types)
    list_ingest_errors = _blocking_iter(Client.list_ingest_errors)
    list_ingest_errors_page = _blocking(Client.list_ingest_errors_page)
    healthz = _blocking(Client.healthz)
    readyz = _blocking(Client.readyz)
    metrics = _blocking(Client.metrics)
