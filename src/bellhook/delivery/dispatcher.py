"""The dispatcher loop: claim due deliveries, send them concurrently, record outcomes.

- A global limit (``max_concurrency``) and a per-webhook limit: the claim never takes
  more of a webhook's deliveries than it has free slots, so one slow or dead receiver
  fills its own slots and never delays the others.
- Each webhook's deliveries are claimed a few rounds of its slots ahead, so that the
  next claim's round trip overlaps with sending. The window grows for a webhook whose
  sending outpaces its claims, and goes back when it catches up or slows down
  (``domain.windows``).
- Outcomes are written in batches by a flusher task; a crash before the write only
  means the delivery is sent again when its lease runs out (at-least-once).
- A webhook that stops answering (timeouts, refused connections) gets one new request
  at a time until one is answered: its claimed-ahead deliveries go back to the queue,
  and once the requests already under way have timed out, a dead receiver costs each
  worker process one socket and one timeout at a time, not sixteen.
- Ingest in the same process hands fresh deliveries over directly (``reserve`` /
  ``accept``): they are stored already leased to this dispatcher and sent as soon as
  they are committed, without a claim. Those that do not fit are stored due now,
  and their webhooks marked, so that the claim loop takes them when slots free up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta

import structlog

from bellhook.delivery.sender import Sender, build_request
from bellhook.domain.outcome import AttemptResult, decide, went_unanswered
from bellhook.domain.retry import RetryPolicy
from bellhook.domain.windows import ClaimWindows
from bellhook.errors import BellhookError
from bellhook.runtime import Runtime
from bellhook.store.deliveries import Completed, Job
from bellhook.store.outage import Outage
from bellhook.store.wakeups import listening

LOGGER_NAME = "bellhook.delivery"
log = structlog.get_logger(LOGGER_NAME)

CLAIM_AHEAD = 8  # claim up to this many rounds of slots (in flight + queued)
MAX_AHEAD = 128  # rounds, for a webhook whose sending outpaces its claims (see _finished)
REFILL_ROUNDS = 2  # rounds of slots freed before the next claim
PROBE_SLOTS = 1  # requests at a time to a webhook that stopped answering
SLOW_AHEAD = 2  # rounds claimed ahead for a webhook whose queue outlived a lease
FLUSH_EVERY = 0.05  # seconds between outcome writes under load
FLUSH_AT = 500  # outcomes that trigger a write at once
PURGE_EVERY = 600.0
PURGE_BATCH = 500
PURGE_PAUSE = 0.05  # seconds between purge batches


class Dispatcher:
    def __init__(self, rt: Runtime, sender: Sender, *, rng: random.Random | None = None) -> None:
        self.rt = rt
        self.sender = sender
        self.settings = rt.settings
        self.policy = RetryPolicy(rt.settings.retry_schedule, rt.settings.retry_jitter)
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        # A claim lapses after twice the timeout plus a margin; a worker killed
        # mid-delivery thus has its deliveries retried soon after.
        self.lease = timedelta(seconds=2 * rt.settings.delivery_timeout + 5)
        self._in_flight: Counter[str] = Counter()  # requests under way, per webhook
        self._in_flight_total = 0
        self._per_webhook = rt.settings.per_webhook_concurrency
        # Claimed ahead, waiting for a slot of their webhook: the next claim's round trip
        # overlaps with sending, instead of slots standing empty while it runs. A job is
        # only started with a timeout and 5 s of its lease left (the send, then time to
        # record it); one that waited longer (a slow receiver) is given back, and its
        # webhook is claimed SLOW_AHEAD rounds ahead from then on. Past its lease,
        # another worker may have claimed it; the give-back leaves such a job alone.
        self._queued: dict[str, deque[Job]] = {}
        self._send_margin = timedelta(seconds=rt.settings.delivery_timeout + 5)
        self._held: Counter[str] = Counter()  # in flight + queued (+ reserved), per webhook
        self._held_total = 0
        self._window = CLAIM_AHEAD * rt.settings.max_concurrency
        self._per_webhook_window = CLAIM_AHEAD * self._per_webhook
        # Whether the queue may hold due deliveries this dispatcher has not claimed, for
        # any webhook (a claim cut short by the global limit) or for these webhooks:
        # freed slots wake the claim loop only then, not after every delivery.
        self._more_due = True
        self._backlogged: set[str] = set()
        self._marked_lately: set[str] = set()  # marked while a claim was under way
        self._probing: set[str] = set()  # webhooks that stopped answering
        self._slow: set[str] = set()  # webhooks whose queued jobs outlived a lease
        # A webhook whose sending outpaces its claims gets a larger window (see
        # _finished): under load (two worker processes taking turns at the write lock,
        # an event loop busy with hundreds of responses) a claim takes tens of ms, more
        # than CLAIM_AHEAD rounds last at thousands a second; and larger claims are
        # fewer. What the grown windows add stays within half the dispatcher's window.
        self._windows = ClaimWindows(
            start=self._per_webhook_window,
            most=MAX_AHEAD * self._per_webhook,
            budget=self._window // 2,
        )
        # A job that waited this long of its time to start: its webhook slowed (_slowed).
        self._slowing_slack = timedelta(seconds=rt.settings.delivery_timeout / 2)
        # The last claim was bounded by the dispatcher's own window, not a webhook's: a
        # queue that runs dry then says nothing of that webhook's window.
        self._window_bound = False
        self._releases: set[asyncio.Task[None]] = set()
        self._freed = 0  # slots freed since the last claim
        # Rounds of a webhook's slots: the rounds still queued cover the claim's round
        # trip, and claims (write transactions) stay few and large.
        self._refill_step = REFILL_ROUNDS * min(self._per_webhook, rt.settings.max_concurrency)
        self._active: set[str] = set()  # delivery ids sent or waiting to be recorded
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: list[Completed] = []
        self._wake = rt.work_available
        # A database outage: one line when it starts and one when it ends, and a growing
        # pause between tries meanwhile, for claims and for outcome writes alike.
        self._claims_out = Outage("dispatcher.claims")
        self._records_out = Outage("dispatcher.outcomes")
        self._flush_now = asyncio.Event()
        self._stopping = asyncio.Event()
        self._drained = asyncio.Event()
        self._stopped = False
        # Checked once: a success is logged at debug level, and building that line for
        # every delivery only to drop it is a measurable cost at thousands a second.
        self._log_successes = logging.getLogger(LOGGER_NAME).isEnabledFor(logging.DEBUG)
        # Likewise: with tracing off, an attempt costs this one check.
        self._traced = rt.tracing.on

    def state(self) -> str:
        """For /readyz: ``ok`` while delivering."""
        if self._stopped:
            return "stopped"
        return "stopping" if self._stopping.is_set() else "ok"

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Deliver until ``stop()``; then finish in-flight requests within the grace period."""
        log.info(
            "dispatcher.started",
            max_concurrency=self.settings.max_concurrency,
            per_webhook=self.settings.per_webhook_concurrency,
        )
        self.rt.components["dispatcher"] = self.state
        flusher = asyncio.create_task(self._flush_loop(), name="bellhook-flusher")
        purger = asyncio.create_task(self._purge_loop(), name="bellhook-purger")
        # On PostgreSQL, new work of other processes wakes this one (store.wakeups).
        wakeups = listening(self.rt.db, self._wake.set, url=self.settings.listen_database_url)
        try:
            async with wakeups:
                await self._claim_loop()
        finally:
            purger.cancel()
            await self._drain()
            if self._releases:
                await asyncio.wait(set(self._releases))
            self._stopping.set()
            self._drained.set()  # no send under way or to come: the last outcomes are in
            self._flush_now.set()
            await flusher
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            self._stopped = True
            log.info("dispatcher.stopped")

    async def _claim_loop(self) -> None:
        settings = self.settings
        self.rt.events.handoff = self
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                self._freed = 0
                free = self._window - self._held_total
                limit = min(free, settings.claim_batch)
                jobs: list[Job] = []
                if free > 0:
                    occupied = self._occupied()
                    self._more_due = False
                    self._marked_lately.clear()
                    self._windows.claim_started()
                    try:
                        jobs = await self.rt.deliveries.claim(
                            now=self.rt.clock(),
                            limit=limit,
                            lease=self.lease,
                            in_flight=occupied,
                            per_webhook=self._per_webhook_window,
                        )
                    except BellhookError as exc:
                        self._more_due = True
                        await self._idle(self._claims_out.failed(exc))
                        continue
                    self._claims_out.succeeded()
                    self._note_claim(jobs, occupied, cut_short=len(jobs) >= limit)
                else:
                    self._more_due = True
                self._window_bound = len(jobs) >= free  # also when there was no room
                self._enqueue(jobs, reserved=False)
                self._pump()
                if len(jobs) < limit or free <= 0:
                    await self._idle(settings.poll_interval)
                else:
                    # Another claim at once, but the sends just started go first: on
                    # SQLite a claim does not wait on anything (store.direct).
                    await asyncio.sleep(0)
        finally:
            if self.rt.events.handoff is self:
                self.rt.events.handoff = None

    def _occupied(self) -> dict[str, int]:
        """Slots taken per webhook, as the claim sees them: a webhook with a smaller
        window (probed, slow) looks fuller by the difference, one with a grown window
        emptier (below zero, if need be)."""
        occupied = dict(self._held)
        for webhook_id in self._probing | self._slow | self._windows.grown():
            occupied[webhook_id] = (
                self._per_webhook_window
                - self._window_of(webhook_id)
                + self._held.get(webhook_id, 0)
            )
        return occupied

    def _window_of(self, webhook_id: str) -> int:
        if webhook_id in self._probing:
            return PROBE_SLOTS
        if webhook_id in self._slow:
            return SLOW_AHEAD * self._per_webhook
        return self._windows.of(webhook_id)

    def _mark(self, webhook_id: str) -> None:
        """``webhook_id`` may have due deliveries in the queue that this dispatcher
        does not hold."""
        self._backlogged.add(webhook_id)
        self._marked_lately.add(webhook_id)

    def _note_claim(self, jobs: list[Job], occupied: dict[str, int], *, cut_short: bool) -> None:
        """Which webhooks may still have due deliveries that this dispatcher does not hold.

        A webhook that got all the room it had may have more; one that got less has no
        more due (unless it was marked again while the claim ran); one that had no room
        keeps its mark. Freed slots of marked webhooks wake the claim loop; others wait
        for the poll, so that a busy dispatcher does not run a claim (a write
        transaction) that can only come back empty.
        """
        if cut_short:
            self._more_due = True
        got = Counter(job.webhook_id for job in jobs)
        for webhook_id in list(self._backlogged - self._marked_lately):
            room = self._per_webhook_window - occupied.get(webhook_id, 0)
            if room > 0 and got[webhook_id] < room:
                self._backlogged.discard(webhook_id)
        for webhook_id, n in got.items():
            if n >= self._per_webhook_window - occupied.get(webhook_id, 0):
                self._backlogged.add(webhook_id)
        if not cut_short:
            # A grown window whose webhook has no more due has caught up: back to the
            # start (also one that left the backlog in a claim cut short before).
            for webhook_id in [w for w in self._windows.grown() if w not in self._backlogged]:
                self._windows.reset(webhook_id)

    def _enqueue(self, jobs: list[Job], *, reserved: bool) -> None:
        for job in jobs:
            if job.delivery_id in self._active:
                if reserved:
                    self._release_slot(job.webhook_id)
                continue
            self._active.add(job.delivery_id)
            if not reserved:
                self._held[job.webhook_id] += 1
                self._held_total += 1
            self._queued.setdefault(job.webhook_id, deque()).append(job)

    def _release_slot(self, webhook_id: str) -> None:
        self._held[webhook_id] -= 1
        self._held_total -= 1
        if self._held[webhook_id] <= 0:
            del self._held[webhook_id]

    # --- deliveries handed over by ingest in this process (the Handoff protocol) --------

    def reserve(self, webhook_id: str) -> bool:
        if self._stopping.is_set():
            return False
        if self._held_total >= self._window:
            self._more_due = True  # stored due now: claimed as soon as slots free up
            return False
        if self._held[webhook_id] >= self._window_of(webhook_id):
            self._mark(webhook_id)
            return False
        self._held[webhook_id] += 1
        self._held_total += 1
        return True

    def unreserve(self, webhook_ids: Iterable[str]) -> None:
        for webhook_id in webhook_ids:
            self._release_slot(webhook_id)

    def accept(self, jobs: list[Job]) -> None:
        if self._stopping.is_set():
            # Stopping meanwhile: leave them leased; they are sent when the lease lapses.
            self.unreserve(job.webhook_id for job in jobs)
            return
        self._enqueue(jobs, reserved=True)
        self._pump()

    def _pump(self) -> None:
        """Start queued jobs while their webhook and the dispatcher have free slots."""
        room = self.settings.max_concurrency - self._in_flight_total
        if room <= 0 or not self._queued:
            return
        send_by = self.rt.clock() + self._send_margin
        expiring: list[Job] = []
        for webhook_id in list(self._queued):
            while room > 0 and (job := self._take(webhook_id, send_by, expiring)) is not None:
                self._start(job)
                room -= 1
            if room <= 0:
                break
        self._give_back_expiring(expiring)

    def _take(self, webhook_id: str, send_by: datetime, expiring: list[Job]) -> Job | None:
        """The next queued job of ``webhook_id`` if its webhook has a free slot, counted
        in flight. Jobs whose lease would run out before the send ends go to ``expiring``."""
        queue = self._queued.get(webhook_id)
        if queue is None:
            return None
        limit = PROBE_SLOTS if webhook_id in self._probing else self._per_webhook
        job = None
        while queue and self._in_flight[webhook_id] < limit:
            candidate = queue.popleft()
            lease_end = candidate.leased_until
            if lease_end is not None and lease_end < send_by + self._slowing_slack:
                if lease_end < send_by:
                    expiring.append(candidate)
                    continue
                if self._windows.is_grown(webhook_id) or (
                    self._held[webhook_id] > self._window_of(webhook_id)
                ):
                    self._slowed(webhook_id, queue)
            job = candidate
            self._in_flight[webhook_id] += 1
            self._in_flight_total += 1
            break
        if not queue:
            del self._queued[webhook_id]
        elif job is not None:
            # To the back: when the global limit is what runs out, the webhooks after
            # this one go first next time.
            self._queued[webhook_id] = self._queued.pop(webhook_id)
        return job

    def _slowed(self, webhook_id: str, queue: deque[Job]) -> None:
        """A job waited half its time to start, and its webhook has a grown window or
        holds more than its window (claimed while it was larger): the webhook slowed
        down. Its window goes back to the start, and the jobs still queued go back to
        the queue now, to be claimed again with fresh leases, before theirs run short
        (which would mark it slow for good). The older ones, kept, would have had half
        their time left at most."""
        self._windows.reset(webhook_id)
        if not queue:
            return
        released = list(queue)
        queue.clear()
        log.info("webhook.slowed", webhook_id=webhook_id, released=len(released))
        self._give_back(released, reason="slowed")

    def _give_back_expiring(self, expiring: list[Job]) -> None:
        if expiring:
            for job in expiring:
                self._slow.add(job.webhook_id)
                self._windows.reset(job.webhook_id)
            self._give_back(expiring, reason="lease_expiring")

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _start(self, job: Job) -> None:
        task = asyncio.create_task(self._lane(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lane(self, first: Job) -> None:
        """Send ``first``, then each next job that may start in the slot it frees, until
        none may: one task for a run of deliveries, not one per delivery, and the
        bookkeeping of a completion does not grow with the webhooks in flight."""
        job: Job | None = first
        while job is not None:
            recorded = False
            try:
                recorded = await self._deliver(job)
            finally:
                was_full = self._finished(job, recorded=recorded)
            job = None if self._stopping.is_set() else self._next_after(job.webhook_id, was_full)

    def _next_after(self, webhook_id: str, was_full: bool) -> Job | None:
        """The job to send in the slot a delivery of ``webhook_id`` just freed.

        With the global limit not reached, only that webhook's queue can have gained a
        startable job (every other one was started when it could be); with the global
        limit reached, any webhook's could, and they take turns.
        """
        if not self._queued:  # the common case between claims: nothing waits
            return None
        send_by = self.rt.clock() + self._send_margin
        expiring: list[Job] = []
        job = None
        if was_full:
            # In queue order: a webhook served goes to the back, so one with a deep
            # backlog cannot keep the slots it frees while others wait.
            for other in list(self._queued):
                if (job := self._take(other, send_by, expiring)) is not None:
                    break
        else:
            job = self._take(webhook_id, send_by, expiring)
        self._give_back_expiring(expiring)
        return job

    async def _deliver(self, job: Job) -> bool:
        """Send one job and keep its outcome for the flusher; False if that failed."""
        probed = job.webhook_id in self._probing  # sent as a probe
        try:
            now = self.rt.clock()
            request = build_request(job, now=now)
            if self._traced:  # a span per attempt (observability.tracing)
                result = await self.rt.tracing.send(self.sender, job, request, started_at=now)
            else:
                result = await self.sender.send(request, started_at=now)
            decision = decide(
                result,
                schedule_step=job.schedule_step,
                policy=self.policy,
                now=self.rt.clock(),
                rand=self.rng.random(),
            )
            self._log(job, result, decision.retry_scheduled, decision.next_attempt_at)
            if went_unanswered(result):
                self._start_probing(job.webhook_id, result)
            elif probed and job.webhook_id in self._probing:
                # Only a probe's answer counts: one to a request sent before the
                # probing began says little about the receiver now.
                self._probing.discard(job.webhook_id)
                log.info("webhook.answering_again", webhook_id=job.webhook_id)
                self._wake.set()  # its backlog is claimed at full width again
            self._outcomes.append(Completed(job, result, decision))
            if len(self._outcomes) >= FLUSH_AT:
                self._flush_now.set()
        except Exception:
            # A bug, not a failed delivery: log it; the lease brings the delivery back.
            log.exception(
                "delivery.crashed", delivery_id=job.delivery_id, webhook_id=job.webhook_id
            )
            return False
        return True

    def _finished(self, job: Job, *, recorded: bool) -> bool:
        """Free the slots of a job sent (or crashed); True if the global limit had been
        reached."""
        was_full = self._in_flight_total >= self.settings.max_concurrency
        webhook_id = job.webhook_id
        self._in_flight[webhook_id] -= 1
        self._in_flight_total -= 1
        if self._in_flight[webhook_id] <= 0:
            del self._in_flight[webhook_id]
        self._release_slot(webhook_id)
        if not recorded:
            self._active.discard(job.delivery_id)
        # Refill in steps, not after every single completion: a claim is a write
        # transaction, and one per delivery would halve throughput. A webhook's queue
        # that ran dry while the database holds more of it was outpaced: its window
        # grows, unless it is probed or slow (their windows are smaller on purpose), or
        # the dispatcher's own window is what ran out.
        self._freed += 1
        step = self._refill_step
        backlogged = webhook_id in self._backlogged
        if backlogged and webhook_id in self._queued:  # a grown window's claims stay large
            step = self._windows.refill_step(webhook_id, step)
        elif backlogged and not (
            webhook_id in self._probing or webhook_id in self._slow or self._window_bound
        ):
            self._windows.grow(webhook_id)
        if (self._more_due or backlogged) and (self._freed >= step or not self._held):
            self._wake.set()
        return was_full

    def _start_probing(self, webhook_id: str, result: AttemptResult) -> None:
        """One request at a time to a webhook that gave no answer; its claimed-ahead
        deliveries go back to the queue (due now) rather than wait out their lease."""
        if webhook_id in self._probing:
            return
        self._probing.add(webhook_id)
        self._windows.reset(webhook_id)  # when it answers again, it starts over
        queued = list(self._queued.pop(webhook_id, ()))
        log.warning(
            "webhook.not_answering",
            webhook_id=webhook_id,
            error_kind=str(result.error_kind),
            released=len(queued),
        )
        self._give_back(queued, reason="not_answering")
        self._mark(webhook_id)

    def _give_back(self, jobs: list[Job], *, reason: str) -> None:
        """Unsent jobs back to the queue, due now (in the background)."""
        if not jobs:
            return
        for job in jobs:
            self._active.discard(job.delivery_id)
            self._release_slot(job.webhook_id)
        log.debug("dispatcher.given_back", deliveries=len(jobs), reason=reason)
        task = asyncio.create_task(self._release(jobs))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, jobs: list[Job]) -> None:
        try:
            await self.rt.deliveries.release(jobs, now=self.rt.clock())
        except BellhookError as exc:  # their leases run out instead
            log.warning("dispatcher.release_failed", error=exc.message)
            return
        for job in jobs:  # due again now: a claim takes them when there is room
            self._mark(job.webhook_id)
        self._wake.set()

    def _log(self, job: Job, result: AttemptResult, retrying: bool, when: object) -> None:
        if result.succeeded and not self._log_successes:
            return
        fields = {
            "delivery_id": job.delivery_id,
            "webhook_id": job.webhook_id,
            "event_id": job.event_id,
            "attempt": job.attempt_count + 1,
            "status_code": result.status_code,
            "latency_ms": result.latency_ms,
        }
        if result.succeeded:
            log.debug("delivery.succeeded", **fields)
        elif retrying:
            log.info(
                "delivery.retry_scheduled",
                **fields,
                error_kind=str(result.error_kind),
                next_attempt_at=str(when),
            )
        else:
            log.warning("delivery.failed", **fields, error_kind=str(result.error_kind))

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        give_up_at: float | None = None  # set once drained
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), FLUSH_EVERY)
            self._flush_now.clear()
            if give_up_at is None and self._drained.is_set():
                give_up_at = loop.time() + self.settings.shutdown_grace
            if give_up_at is None:
                await self.flush()
                continue
            # Stopping: the outcomes get the grace period (at least a second) to be
            # written, not forever. Those deliveries were sent; if the database keeps
            # refusing them, their leases bring them back, and they are sent again
            # rather than lost (at-least-once).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), max(give_up_at - loop.time(), 1.0))
            if not self._outcomes:
                return
            if loop.time() >= give_up_at:
                log.error("dispatcher.outcomes_unsaved", outcomes=len(self._outcomes))
                return

    async def flush(self) -> None:
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        try:
            disabled = await self.rt.deliveries.record(
                batch,
                now=self.rt.clock(),
                auto_disable_after=timedelta(seconds=self.settings.auto_disable_after),
            )
        except BellhookError as exc:
            self._outcomes[:0] = batch  # keep them; the next flush tries again
            await asyncio.sleep(self._records_out.failed(exc))  # the database is away
            return
        except asyncio.CancelledError:
            self._outcomes[:0] = batch  # a flush cut short at stop: still unsaved
            raise
        self._records_out.succeeded()
        for c in batch:
            self._active.discard(c.job.delivery_id)
        self.rt.metrics.delivered(batch, now=self.rt.clock())
        self.rt.metrics.disabled(len(disabled))
        for webhook_id in disabled:
            log.warning("webhook.disabled", webhook_id=webhook_id)

    async def _drain(self) -> None:
        queued = [job for queue in self._queued.values() for job in queue]
        self._queued.clear()
        if queued:
            # Claimed but never sent: due again now, not when their lease runs out.
            try:
                await self.rt.deliveries.release(queued, now=self.rt.clock())
            except BellhookError as exc:
                log.warning("dispatcher.release_failed", error=exc.message)
            self._active.difference_update(job.delivery_id for job in queued)
        if not self._tasks:
            return
        log.info(
            "dispatcher.draining",
            in_flight=len(self._tasks),
            grace_seconds=self.settings.shutdown_grace,
        )
        _done, pending = await asyncio.wait(set(self._tasks), timeout=self.settings.shutdown_grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning("dispatcher.abandoned", deliveries=len(pending))

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(min(PURGE_EVERY, 60.0))
            before = self.rt.clock() - timedelta(days=self.settings.retention_days)
            try:
                removed = await purge_expired(self.rt, before=before)
            except BellhookError as exc:
                log.warning("retention.purge_failed", error=exc.message)
            else:
                if removed:
                    log.info("retention.purged", rows=removed)
            await asyncio.sleep(PURGE_EVERY)


async def purge_expired(rt: Runtime, *, before: datetime) -> int:
    """Delete what the retention expired before ``before``, in small batches with a pause
    between them: each is a short transaction on indexed rows, and deliveries (claims,
    outcomes) run between them, so that a purge of millions never stalls delivery."""
    removed = 0
    for purge in (rt.deliveries.purge, rt.ingest_errors.purge):
        while n := await purge(before=before, batch=PURGE_BATCH):
            removed += n
            await asyncio.sleep(PURGE_PAUSE)
    return removed


@contextlib.asynccontextmanager
async def running_dispatcher(rt: Runtime) -> AsyncIterator[Dispatcher]:
    """A dispatcher running in the background for the duration of the block."""
    dispatcher = Dispatcher(rt, rt.sender)
    task = asyncio.create_task(dispatcher.run(), name="bellhook-dispatcher")
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await task
