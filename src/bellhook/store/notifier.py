"""The sending side of the wake-ups (``store.wakeups``): ``NOTIFY bellhook_work`` after
a commit that left deliveries due, on a pooled connection of its own.

Not inside the transaction that made the work: PostgreSQL takes one lock for the whole
server from a transaction's NOTIFY until its commit is flushed, so that every
transaction that notifies would commit one after another, and group commit (many API
requests, one flush) would be lost. Here a NOTIFY is a statement of its own, and the
notifications of a busy process are folded: while one is being sent, any number of
commits ask for one more, sent when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from bellhook.store.direct import NOTIFY_SQL

log = structlog.get_logger("bellhook.wakeups")


class WorkNotifier:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._asked = False
        self._sending: asyncio.Task[None] | None = None

    def due(self) -> None:
        """Say that deliveries are due (after the commit that made them)."""
        self._asked = True
        if self._sending is None or self._sending.done():
            self._sending = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._asked:
            self._asked = False
            try:
                async with self._engine.connect() as conn:
                    driver = (await conn.get_raw_connection()).driver_connection
                    assert driver is not None
                    await driver.execute(NOTIFY_SQL)  # outside a transaction: at once
            except Exception as exc:
                log.debug("wakeups.notify_failed", error=type(exc).__name__)

    async def close(self) -> None:
        task, self._sending = self._sending, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
