"""Who receives an event, and which due deliveries a dispatcher takes next. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bellhook.domain.catalog import WILDCARD, subscribes_to

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Route:
    webhook_id: str
    owner_id: str
    admin_owned: bool
    events: tuple[str, ...]


def recipients(
    routes: Iterable[Route], event_type: str, audience: Sequence[str] | None
) -> list[str]:
    """Active webhooks (the caller passes only those) that must receive the event.

    A social network must not leak a private event: an owner's webhook gets it only
    when the owner is in ``audience`` (or the audience is ``["*"]``). Webhooks of admin
    keys get every event of their types; with no audience, only they do.
    """
    everyone = audience is not None and WILDCARD in audience
    allowed = frozenset(audience or ())
    return [
        r.webhook_id
        for r in routes
        if subscribes_to(r.events, event_type)
        and (r.admin_owned or everyone or r.owner_id in allowed)
    ]


@dataclass(frozen=True, slots=True)
class Candidate:
    delivery_id: str
    webhook_id: str


def pick_claims(
    candidates: Iterable[Candidate],
    *,
    in_flight: Mapping[str, int],
    per_webhook: int,
    limit: int,
) -> list[str]:
    """Delivery ids to claim, oldest first, never over a webhook's concurrency limit.

    A slow receiver fills its own slots and no more, so it cannot hold back the others.
    """
    taken: dict[str, int] = {}
    chosen: list[str] = []
    for c in candidates:
        if len(chosen) >= limit:
            break
        used = in_flight.get(c.webhook_id, 0) + taken.get(c.webhook_id, 0)
        if used >= per_webhook:
            continue
        taken[c.webhook_id] = taken.get(c.webhook_id, 0) + 1
        chosen.append(c.delivery_id)
    return chosen


def in_turns(
    candidates: Iterable[T], *, webhook_of: Callable[[T], str], due_of: Callable[[T], Any]
) -> list[T]:
    """Candidates in turns across webhooks: every webhook's oldest first (oldest of those
    first), then every webhook's second, and so on.

    A claim takes a bounded number of deliveries: in plain age order, a webhook with a
    deep backlog of due retries (a dead receiver) would fill each claim, and a fresh
    delivery to a healthy webhook would wait until the backlog's older ones had all
    been tried. In turns, each webhook with work has its share of every claim.
    """
    by_age = sorted(candidates, key=due_of)
    turn: dict[str, int] = {}
    keyed: list[tuple[int, int, T]] = []
    for c in by_age:
        webhook_id = webhook_of(c)
        rank = turn[webhook_id] = turn.get(webhook_id, -1) + 1
        keyed.append((rank, len(keyed), c))
    keyed.sort(key=lambda k: (k[0], k[1]))  # ties: in age order (the index)
    return [c for _, _, c in keyed]
