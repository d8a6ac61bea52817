"""Opaque, prefixed, time-ordered identifiers (``wh_…``, ``evt_…``, ``dlv_…``).

The time prefix keeps ids roughly sortable by creation, which makes pagination
cursors and B-tree inserts cheap; the random tail makes them unguessable. (A ULID
package would do the same in upper-case base 32; ids here are lowercase, prefixed and
checked by shape before any lookup, which is all this module is.)
"""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_SHAPE = re.compile(r"[a-z]{1,8}_[0-9a-z]{25}")


def _base36(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 36)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str, *, now_ns: int | None = None) -> str:
    micros = (now_ns if now_ns is not None else time.time_ns()) // 1000
    # 11 base-36 digits of microseconds last until the year 3700; 14 random chars ≈ 72 bits.
    return f"{prefix}_{_base36(micros, 11)}{_base36(secrets.randbits(72), 14)}"


def is_wellformed(value: str) -> bool:
    """Whether ``value`` has the shape of an id bellhook makes (so it is worth a lookup)."""
    return _SHAPE.fullmatch(value) is not None
