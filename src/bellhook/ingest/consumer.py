"""The Kafka consumer loop: messages in, stored fan-outs out, offsets committed after.

Each round reads a batch, stores its events in one transaction through the same path
as ``POST /api/events/batch`` (and its refused messages in the dead-letter table),
and only then commits the batch's offsets. So:

- a crash between the store and the commit means the batch is read again, and its
  events, whose ids are theirs or their message's position, are duplicates: nothing is
  lost and nothing fans out twice;
- a rebalance happens inside a poll, after the previous batch was committed;
- a database outage keeps the batch, pauses fetching and retries with backoff,
  committing nothing; the loop resumes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import structlog

from bellhook.errors import BellhookError, StorageUnavailable
from bellhook.ingest.intake import Refusal
from bellhook.ingest.kafka import KafkaClient, KafkaUnavailable
from bellhook.ingest.messages import (
    EXCERPT_BYTES,
    KEY_EXCERPT_BYTES,
    Message,
    decode,
    excerpt,
)
from bellhook.runtime import Runtime
from bellhook.store.events import Accepted, NewEvent
from bellhook.store.ingest_errors import IngestError
from bellhook.store.outage import cause_of

log = structlog.get_logger("bellhook.kafka")

POLL_TIMEOUT = 0.5  # seconds a poll waits for messages: how soon a stop is noticed
BACKLOG_CHECK_EVERY = 1.0  # seconds between counts of the pending deliveries, at least
COUNT_SHARE = 20.0  # and at least this many times as long as the last count took
MOST_COUNT_EVERY = 30.0  # but never less often than this (only a count resumes)
RESUME_AT = 0.8  # of the backlog bound: resume below it, so it does not flap
RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # backoff of a store that failed (seconds)
LAG_EVERY = 10.0  # seconds between asking the broker for the partitions' ends (metrics)


@dataclass
class ConsumerState:
    """What the loop knows of itself, for logs and tests."""

    assigned: set[tuple[str, int]] = field(default_factory=set)
    joined: bool = False  # an assignment came (empty, with more consumers than partitions)
    failed: str | None = None  # why the loop ended by itself
    paused_for: set[str] = field(default_factory=set)  # "backlog", "storage", "dead_letters"
    stored: int = 0  # events stored for the first time
    duplicates: int = 0  # events read again (a crash, a rebalance) or published twice
    refused: int = 0


class KafkaIngest:
    def __init__(
        self,
        rt: Runtime,
        *,
        client_factory: Callable[..., KafkaClient] = KafkaClient,
    ) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.state = ConsumerState()
        self.client = client_factory(rt.settings, on_assign=self._assigned, on_revoke=self._revoked)
        self._stopping = asyncio.Event()
        self._last_backlog_check = -BACKLOG_CHECK_EVERY
        self._count_every = BACKLOG_CHECK_EVERY
        self._backlog_estimate = 0
        self._last_lag_check = -LAG_EVERY
        self.metrics = rt.metrics

    def stop(self) -> None:
        """Finish the batch in hand, commit it, leave the group."""
        self._stopping.set()

    def readiness(self) -> str:
        """For /readyz: ``ok`` once in the group (with partitions or none)."""
        if self.state.failed is not None:
            return f"stopped: {self.state.failed}"
        if self._stopping.is_set():
            return "stopping"
        if not self.state.joined:
            return f"joining consumer group {self.settings.kafka_group!r}"
        return "ok"

    def _assigned(self, partitions: list[tuple[str, int]]) -> None:
        self.state.joined = True
        self.state.assigned.update(partitions)
        self.metrics.kafka_rebalances.labels("assigned").inc()
        log.info("kafka.assigned", partitions=_names(partitions))

    def _revoked(self, partitions: list[tuple[str, int]]) -> None:
        self.state.assigned.difference_update(partitions)
        self.metrics.kafka_rebalances.labels("revoked").inc()
        self.metrics.kafka_unassigned(partitions)
        log.info("kafka.revoked", partitions=_names(partitions))

    async def run(self) -> None:
        self.rt.components["kafka"] = self.readiness
        try:
            await self._run()
        except BaseException as exc:
            # /readyz answers anyone: the error's kind, and the details in the log.
            self.state.failed = exc.code if isinstance(exc, BellhookError) else type(exc).__name__
            raise

    async def _run(self) -> None:
        await self.client.start()
        log.info(
            "kafka.started",
            group=self.settings.kafka_group,
            topics=self.settings.kafka_topics,
        )
        try:
            while not self._stopping.is_set():
                await self._check_backlog()
                await self._check_lag()
                batch = await self.client.poll(self.settings.kafka_batch_size, wait=POLL_TIMEOUT)
                if not batch:
                    continue
                if not await self._store(batch):
                    break  # stopped while the database was out: nothing committed
                await self.client.commit(batch)
        finally:
            await self.client.close()
            log.info(
                "kafka.stopped",
                stored=self.state.stored,
                duplicates=self.state.duplicates,
                refused=self.state.refused,
            )

    async def _store(self, batch: list[Message]) -> bool:
        """Store ``batch`` for good, retrying while the database is out; False if the
        loop was stopped first."""
        delay = RETRY_FIRST
        while True:
            try:
                await self._store_once(batch)
            except (StorageUnavailable, KafkaUnavailable) as exc:
                reason = "storage" if isinstance(exc, StorageUnavailable) else "dead_letters"
                if reason not in self.state.paused_for:
                    await self._pause(reason, error=exc.message, cause=cause_of(exc))
                # The pause above is the line an operator sees; each try is a detail.
                log.debug("kafka.store_failed", error=exc.message, retry_in=round(delay, 2))
                await self._check_lag()  # the lag grows meanwhile: metrics keep saying so
                wait = delay * random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not a secret)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
                if self._stopping.is_set():
                    return False
                delay = min(delay * 2, RETRY_MAX)
                continue
            for reason in {"storage", "dead_letters"} & self.state.paused_for:
                await self._resume(reason)
            return True

    async def _store_once(self, batch: list[Message]) -> None:
        now = self.rt.clock()
        events: list[NewEvent] = []
        refused: list[tuple[Message, Refusal]] = []
        for message in batch:
            decoded = decode(message, now=now)
            if isinstance(decoded, Refusal):
                refused.append((message, decoded))
            else:
                events.append(decoded)
        if refused:
            # Before the events: a refused message is on record (and on the dead-letter
            # topic) before its offset can be committed.
            await self.rt.ingest_errors.record([_record(m, r) for m, r in refused], now=now)
            await self.client.dead_letter([(m, r.code, r.message) for m, r in refused])
            for m, r in refused:
                log.warning(
                    "kafka.message_refused",
                    topic=m.topic,
                    partition=m.partition,
                    offset=m.offset,
                    code=r.code,
                )
        accepted: list[Accepted] = []
        if events and self.rt.tracing.on:
            # One span per stored batch; its context is stored on each of its events.
            with self.rt.tracing.ingest("kafka", events) as span:
                accepted = await self.rt.events.ingest(span.traced(events), now=now)
                span.accepted(accepted)
        elif events:
            accepted = await self.rt.events.ingest(events, now=now)
        self.metrics.ingested_events(
            "kafka", [e.type for e in events], [a.duplicate for a in accepted]
        )
        self.metrics.rejected_events("kafka", (r.code for _, r in refused))
        fresh = [a for a in accepted if not a.duplicate]
        self.state.stored += len(fresh)
        self.state.duplicates += len(accepted) - len(fresh)
        self.state.refused += len(refused)
        # What the backlog has grown by since it was counted: past the bound, count again.
        self._backlog_estimate += sum(a.deliveries for a in fresh)
        log.debug(
            "kafka.batch_stored",
            events=len(fresh),
            duplicates=len(accepted) - len(fresh),
            refused=len(refused),
        )

    async def _check_backlog(self) -> None:
        """Pause past the bound, resume once drained.

        The pending deliveries are counted every second, or less often when counting
        is slow: a count reads the whole backlog's index (0.6 s at a million pending
        on PostgreSQL), and counting never takes more than a twentieth of the time.
        Between counts, what this loop stored is added to the last count; an estimate
        past the bound pauses at once, so that the backlog never grows by more than a
        batch past it, and only a count resumes."""
        bound = self.settings.kafka_max_backlog
        moment = time.monotonic()
        if moment - self._last_backlog_check < self._count_every:
            if self._backlog_estimate > bound and "backlog" not in self.state.paused_for:
                await self._pause(
                    "backlog", pending=self._backlog_estimate, estimated=True, bound=bound
                )
            return
        self._last_backlog_check = moment
        try:
            # Past the bound + 1, the exact number changes nothing.
            pending = await self.rt.deliveries.pending(at_most=bound + 1)
        except StorageUnavailable:
            return  # the store's own retry pauses and says so; counted again later
        took = time.monotonic() - moment
        self._count_every = min(MOST_COUNT_EVERY, max(BACKLOG_CHECK_EVERY, COUNT_SHARE * took))
        self._backlog_estimate = pending
        if "backlog" not in self.state.paused_for and pending > bound:
            await self._pause("backlog", pending=pending, bound=bound)
        elif "backlog" in self.state.paused_for and pending <= bound * RESUME_AT:
            await self._resume("backlog", pending=pending, bound=bound)

    async def _check_lag(self) -> None:
        moment = time.monotonic()
        if moment - self._last_lag_check >= LAG_EVERY:
            self._last_lag_check = moment
            self.metrics.kafka_lags(await self.client.lags())

    async def _pause(self, reason: str, **fields: object) -> None:
        first = not self.state.paused_for
        self.state.paused_for.add(reason)
        if first:
            await self.client.set_paused(True)
            self.metrics.kafka_paused.set(1)
        log.warning("kafka.paused", reason=reason, **fields)

    async def _resume(self, reason: str, **fields: object) -> None:
        self.state.paused_for.discard(reason)
        if not self.state.paused_for:
            await self.client.set_paused(False)
            self.metrics.kafka_paused.set(0)
        log.info("kafka.resumed", reason=reason, **fields)


def _record(message: Message, refusal: Refusal) -> IngestError:
    return IngestError(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=excerpt(message.key, KEY_EXCERPT_BYTES) if message.key is not None else None,
        excerpt=excerpt(message.value, EXCERPT_BYTES),
        code=refusal.code,
        reason=refusal.message,
    )


def _names(partitions: list[tuple[str, int]]) -> list[str]:
    return sorted(f"{topic}/{partition}" for topic, partition in partitions)


@contextlib.asynccontextmanager
async def running_consumer(rt: Runtime) -> AsyncIterator[KafkaIngest | None]:
    """The Kafka consumer in the background for the block, when the settings name a
    cluster (``serve``); stopped (its batch finished and committed) on the way out."""
    if not rt.settings.kafka_bootstrap_servers:
        yield None
        return
    ingest = KafkaIngest(rt)
    task = asyncio.create_task(ingest.run(), name="bellhook-kafka")
    task.add_done_callback(_report_failure)
    try:
        yield ingest
    finally:
        ingest.stop()
        with contextlib.suppress(Exception):  # already reported by _report_failure
            await task


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        message = exc.message if isinstance(exc, BellhookError) else repr(exc)
        log.error("kafka.failed", error=message)
