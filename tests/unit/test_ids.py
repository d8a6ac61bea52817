"""Ids: prefixed, time-ordered, random enough, and recognized by shape."""

from __future__ import annotations

from bellhook.domain.ids import is_wellformed, new_id, new_ids


def test_ids_have_their_shape_and_sort_by_creation_time() -> None:
    earlier = new_id("dlv", now_ns=1_700_000_000_000_000_000)
    later = new_id("dlv", now_ns=1_700_000_000_000_001_000)  # one microsecond on
    assert is_wellformed(earlier) and is_wellformed(later)
    assert earlier.startswith("dlv_") and len(earlier) == len("dlv_") + 25
    assert earlier < later
    assert earlier[:15] != later[:15]  # the time part changed, not just the random tail


def test_many_ids_at_once_are_distinct_and_well_formed() -> None:
    ids = new_ids("att", 5000)
    assert len(set(ids)) == 5000
    assert all(is_wellformed(i) and i.startswith("att_") for i in ids)
    assert not is_wellformed("att_" + "A" * 25)


def test_random_tails_use_every_base32_character_and_no_other() -> None:
    tails = "".join(i[-14:] for i in new_ids("att", 2000))  # 28,000 characters
    counts = {c: tails.count(c) for c in set(tails)}
    assert set(counts) == set("abcdefghijklmnopqrstuvwxyz234567")
    # Each of the 32 is expected 875 times; a skewed mapping (one character of two
    # bytes' worth, say) would be far outside this band.
    assert all(700 < n < 1050 for n in counts.values()), counts
