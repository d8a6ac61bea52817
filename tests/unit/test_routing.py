"""recipients (who gets an event) and pick_claims (what a dispatcher takes next)."""

from __future__ import annotations

import pytest

from bellhook.domain.routing import Candidate, Route, in_turns, pick_claims, recipients

ADMIN_POSTS = Route("wh_admin", "ops", admin_owned=True, events=("post.created",))
ADMIN_ALL = Route("wh_admin_all", "ops", admin_owned=True, events=("*",))
ALICE_POSTS = Route("wh_alice", "alice", admin_owned=False, events=("post.created",))
ALICE_COMMENTS = Route("wh_alice_c", "alice", admin_owned=False, events=("comment.created",))
BOB_ALL = Route("wh_bob", "bob", admin_owned=False, events=("*",))
BOB_MANY = Route(
    "wh_bob_many", "bob", admin_owned=False, events=("comment.created", "post.created")
)
ROUTES = [ADMIN_POSTS, ADMIN_ALL, ALICE_POSTS, ALICE_COMMENTS, BOB_ALL, BOB_MANY]


def ids(*routes: Route) -> list[str]:
    return [r.webhook_id for r in routes]


# --- recipients -------------------------------------------------------------------------------


def test_no_audience_is_admin_webhooks_only() -> None:
    assert recipients(ROUTES, "post.created", None) == ids(ADMIN_POSTS, ADMIN_ALL)
    assert recipients(ROUTES, "user.registered", None) == ids(ADMIN_ALL)


def test_empty_audience_is_admin_webhooks_only() -> None:
    assert recipients(ROUTES, "post.created", ()) == ids(ADMIN_POSTS, ADMIN_ALL)


def test_audience_list_adds_those_owners() -> None:
    assert recipients(ROUTES, "post.created", ["alice"]) == ids(ADMIN_POSTS, ADMIN_ALL, ALICE_POSTS)
    assert recipients(ROUTES, "post.created", ["bob", "nobody"]) == ids(
        ADMIN_POSTS, ADMIN_ALL, BOB_ALL, BOB_MANY
    )
    assert recipients(ROUTES, "comment.created", ["alice", "bob"]) == ids(
        ADMIN_ALL, ALICE_COMMENTS, BOB_ALL, BOB_MANY
    )


def test_wildcard_audience_is_every_subscriber() -> None:
    assert recipients(ROUTES, "post.created", ["*"]) == ids(
        ADMIN_POSTS, ADMIN_ALL, ALICE_POSTS, BOB_ALL, BOB_MANY
    )
    assert recipients(ROUTES, "friend.request.sent", ("*",)) == ids(ADMIN_ALL, BOB_ALL)


def test_event_type_must_match_the_subscription() -> None:
    assert recipients(ROUTES, "reaction.added", ["alice"]) == ids(ADMIN_ALL)
    assert recipients([ALICE_COMMENTS], "post.created", ["*"]) == []


def test_owner_names_are_exact() -> None:
    assert recipients(ROUTES, "post.created", ["Alice", "alice "]) == ids(ADMIN_POSTS, ADMIN_ALL)
    # An owner id that merely contains "*" is not the wildcard.
    assert recipients(ROUTES, "post.created", ["**"]) == ids(ADMIN_POSTS, ADMIN_ALL)


def test_admin_owned_is_what_counts_not_the_owner_name() -> None:
    not_admin = Route("wh_x", "ops", admin_owned=False, events=("post.created",))
    assert recipients([not_admin], "post.created", None) == []
    assert recipients([not_admin], "post.created", ["ops"]) == ["wh_x"]


def test_no_routes() -> None:
    assert recipients([], "post.created", ["*"]) == []


# --- pick_claims -----------------------------------------------------------------------------


def cands(*webhooks: str) -> list[Candidate]:
    return [Candidate(f"d{i}", w) for i, w in enumerate(webhooks)]


def test_oldest_first_within_the_limit() -> None:
    chosen = pick_claims(cands("a", "b", "c", "d"), in_flight={}, per_webhook=10, limit=3)
    assert chosen == ["d0", "d1", "d2"]


def test_per_webhook_limit() -> None:
    chosen = pick_claims(
        cands("a", "a", "a", "b", "a", "b", "b"), in_flight={}, per_webhook=2, limit=100
    )
    assert chosen == ["d0", "d1", "d3", "d5"]


def test_in_flight_deliveries_use_up_slots() -> None:
    candidates = cands("a", "a", "b", "b", "c")
    chosen = pick_claims(candidates, in_flight={"a": 1, "b": 2}, per_webhook=2, limit=100)
    assert chosen == ["d0", "d4"]


def test_a_saturated_webhook_does_not_use_the_global_limit() -> None:
    # The slow webhook's backlog comes first, but it has no free slot: the others get
    # the whole limit.
    candidates = cands(*["slow"] * 50, "fast", "fast", "other")
    chosen = pick_claims(candidates, in_flight={"slow": 2}, per_webhook=2, limit=3)
    assert chosen == ["d50", "d51", "d52"]


def test_limit_counts_only_chosen() -> None:
    candidates = cands("a", "a", "a", "b", "c")
    assert pick_claims(candidates, in_flight={}, per_webhook=1, limit=2) == ["d0", "d3"]


@pytest.mark.parametrize("limit", [0, -1])
def test_no_room_takes_nothing(limit: int) -> None:
    assert pick_claims(cands("a", "b"), in_flight={}, per_webhook=5, limit=limit) == []


def test_over_limit_in_flight_takes_nothing_for_that_webhook() -> None:
    assert pick_claims(cands("a", "b"), in_flight={"a": 7}, per_webhook=5, limit=5) == ["d1"]


def test_nothing_to_claim() -> None:
    assert pick_claims([], in_flight={"a": 1}, per_webhook=1, limit=10) == []


def test_consumes_a_lazy_iterable_once() -> None:
    gen = (Candidate(f"d{i}", "a") for i in range(5))
    assert pick_claims(gen, in_flight={}, per_webhook=3, limit=10) == ["d0", "d1", "d2"]


# --- in_turns ------------------------------------------------------------------------------


def turns(rows: list[tuple[str, str, int]]) -> list[str]:
    return [r[0] for r in in_turns(rows, webhook_of=lambda r: r[1], due_of=lambda r: r[2])]


def test_a_deep_backlog_takes_turns_with_a_fresh_delivery() -> None:
    backlog = [(f"old{i}", "dead", i) for i in range(5)]
    fresh = [("new", "healthy", 100)]
    order = turns(backlog + fresh)
    assert order[:2] == ["old0", "new"]  # the healthy webhook's first, not its sixth
    assert order[2:] == ["old1", "old2", "old3", "old4"]  # each webhook's own by age


def test_turns_go_oldest_webhook_first_and_keep_each_webhooks_age_order() -> None:
    rows = [("b1", "b", 5), ("a2", "a", 9), ("a1", "a", 1), ("b2", "b", 6), ("c1", "c", 3)]
    assert turns(rows) == ["a1", "c1", "b1", "b2", "a2"]


def test_pick_claims_after_turns_gives_every_webhook_a_share_of_the_limit() -> None:
    rows = [(f"d{i}", "dead", i) for i in range(100)] + [("h0", "healthy", 1000)]
    ordered = in_turns(rows, webhook_of=lambda r: r[1], due_of=lambda r: r[2])
    chosen = pick_claims(
        (Candidate(r[0], r[1]) for r in ordered), in_flight={}, per_webhook=100, limit=10
    )
    assert "h0" in chosen and len(chosen) == 10
