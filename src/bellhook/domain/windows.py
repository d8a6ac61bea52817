"""Claim windows: how many of a webhook's deliveries a dispatcher claims ahead.

Every webhook starts with the same window (a few rounds of its slots). One whose queue
runs dry while the database still holds more of its deliveries was sending faster than
its claims arrived, and its slots were about to stand empty: its window doubles, up to
a most, once per claim. What the grown windows add, together, stays within a budget,
so that fast webhooks cannot take the whole of the dispatcher's room. A window goes
back to the start when its webhook has caught up, or when it slows down.

Pure bookkeeping: the dispatcher decides when a queue ran dry and when a webhook
caught up or slowed.
"""

from __future__ import annotations

from collections.abc import KeysView

REFILL_SHARE = 8  # a grown window is refilled when this fraction of it has been freed


class ClaimWindows:
    def __init__(self, *, start: int, most: int, budget: int) -> None:
        self.start = start
        self.most = max(most, start)
        self.budget = budget
        self._grown: dict[str, int] = {}
        self._added = 0  # what the grown windows add to ``start``, together
        self._lately: set[str] = set()  # grown since the last claim began

    def of(self, webhook_id: str) -> int:
        return self._grown.get(webhook_id, self.start)

    def is_grown(self, webhook_id: str) -> bool:
        return webhook_id in self._grown

    def grown(self) -> KeysView[str]:
        return self._grown.keys()

    def claim_started(self) -> None:
        """A claim is under way: each window may grow once more (it is that claim that
        would have been late)."""
        self._lately.clear()

    def grow(self, webhook_id: str) -> bool:
        """Double ``webhook_id``'s window (its queue ran dry); False if it may not."""
        if webhook_id in self._lately:
            return False
        window = self.of(webhook_id)
        grown = min(2 * window, self.most)
        if grown <= window or self._added + grown - window > self.budget:
            return False
        self._grown[webhook_id] = grown
        self._added += grown - window
        self._lately.add(webhook_id)
        return True

    def reset(self, webhook_id: str) -> None:
        """Back to the start: the webhook caught up, slowed down or stopped answering."""
        window = self._grown.pop(webhook_id, None)
        if window is not None:
            self._added -= window - self.start

    def refill_step(self, webhook_id: str, usual: int) -> int:
        """Slots of ``webhook_id`` to free before the next claim: more for a grown
        window, so that its claims stay few and large."""
        window = self._grown.get(webhook_id)
        return usual if window is None else max(usual, window // REFILL_SHARE)
