"""Claim windows: doubling once per claim, up to a most, within a budget; reset."""

from __future__ import annotations

from bellhook.domain.windows import REFILL_SHARE, ClaimWindows


def windows(budget: int = 10_000) -> ClaimWindows:
    return ClaimWindows(start=8, most=128, budget=budget)


def test_a_window_doubles_once_per_claim_up_to_the_most() -> None:
    w = windows()
    assert w.of("a") == 8 and not w.is_grown("a")
    seen = []
    for _ in range(6):
        w.claim_started()
        before = w.of("a")
        assert w.grow("a") is (before < 128)
        assert not w.grow("a")  # once per claim
        seen.append(w.of("a"))
    assert seen == [16, 32, 64, 128, 128, 128]
    assert w.is_grown("a") and list(w.grown()) == ["a"]
    assert w.of("b") == 8  # the others keep theirs


def test_what_grown_windows_add_stays_within_the_budget() -> None:
    w = windows(budget=40)
    for _ in range(2):
        w.claim_started()
        assert w.grow("a")  # 8 -> 16 -> 32: adds 24
    assert w.grow("b") and w.grow("c")  # 8 -> 16 each: 40 in all
    assert (w.of("a"), w.of("b"), w.of("c")) == (32, 16, 16)
    w.claim_started()
    assert not w.grow("a") and not w.grow("d")  # over the budget
    assert (w.of("a"), w.of("d")) == (32, 8)
    w.reset("a")  # gives its 24 back
    assert w.of("a") == 8 and not w.is_grown("a")
    assert w.grow("a") and w.of("a") == 16


def test_reset_of_a_window_that_never_grew_changes_nothing() -> None:
    w = windows(budget=8)
    w.reset("a")
    assert w.grow("a") and not w.grow("b")  # the budget is whole, and then spent


def test_a_grown_window_is_refilled_by_a_share_of_it() -> None:
    w = windows()
    assert w.refill_step("a", 16) == 16
    for _ in range(4):
        w.claim_started()
        w.grow("a")
    assert w.of("a") == 128
    assert w.refill_step("a", 4) == 128 // REFILL_SHARE
    assert w.refill_step("a", 64) == 64  # never below the usual step
