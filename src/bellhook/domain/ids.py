"""Opaque, prefixed, time-ordered identifiers (``wh_…``, ``evt_…``, ``dlv_…``).

The time prefix keeps ids roughly sortable by creation, which makes pagination
cursors and B-tree inserts cheap; the random tail makes them unguessable. (A ULID
package would do the same in upper-case base 32; ids here are lowercase, prefixed and
checked by shape before any lookup, which is all this module is.)
"""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # base 36, two digits at a time
_SHAPE = re.compile(r"[a-z]{1,8}_[0-9a-z]{25}")
# Randomness per id: 14 base-32 characters (70 random bits), one random byte each.
# 256 is a multiple of 32, so a byte's value modulo 32 picks each character equally
# often. bytes.translate is C; base64's base-32 encoder is pure Python, and cost 2 µs
# an id (2% of a worker's CPU, for the attempts' ids).
_RANDOM_CHARS = 14
_BASE32 = b"abcdefghijklmnopqrstuvwxyz234567"
_TO_BASE32 = bytes.maketrans(bytes(range(256)), _BASE32 * 8)


def _time_part(micros: int) -> str:
    """11 base-36 digits of microseconds (until the year 3700): sorts by creation."""
    pairs = []
    for _ in range(6):
        micros, rem = divmod(micros, 1296)
        pairs.append(_PAIRS[rem])
    return "".join(reversed(pairs))[1:]


def new_id(prefix: str, *, now_ns: int | None = None) -> str:
    return new_ids(prefix, 1, now_ns=now_ns)[0]


def new_ids(prefix: str, count: int, *, now_ns: int | None = None) -> list[str]:
    """``count`` fresh ids at once: one read of the system's randomness, and one
    encoding, for all of them."""
    micros = (now_ns if now_ns is not None else time.time_ns()) // 1000
    head = f"{prefix}_{_time_part(micros)}"
    size = _RANDOM_CHARS * count
    text = os.urandom(size).translate(_TO_BASE32).decode("ascii")
    return [head + text[i : i + _RANDOM_CHARS] for i in range(0, size, _RANDOM_CHARS)]


def is_wellformed(value: str) -> bool:
    """Whether ``value`` has the shape of an id bellhook makes (so it is worth a lookup)."""
    return _SHAPE.fullmatch(value) is not None
