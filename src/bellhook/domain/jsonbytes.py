"""JSON text exactly as JavaScript's ``JSON.stringify`` writes it.

Receivers following the webhooks guide verify ``HMAC(JSON.stringify(req.body))``,
i.e. they sign their re-serialization of the body, not the bytes on the wire. A
body therefore verifies only if ``JSON.stringify(JSON.parse(body)) == body``;
``js_dumps`` produces such text from a value made by ``json.loads``:

>>> js_dumps({"b": 1.0, "1": [1e21, 1e-7], "a": "é\\n"})
'{"1":[1e+21,1e-7],"b":1,"a":"é\\\\n"}'

Values JavaScript cannot carry unchanged (NaN, infinities, integers beyond
2**53 - 1, non-string keys, other types, nesting deeper than ``MAX_DEPTH``)
raise ``UnrepresentableJson`` naming the offending field. Standard library only:
``bellhook.verify`` ships this module to receivers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_SAFE_INTEGER", "UnrepresentableJson", "js_dumps", "js_number"]

MAX_SAFE_INTEGER = 2**53 - 1  # Number.MAX_SAFE_INTEGER
MAX_DEPTH = 64
_DEPTH_CEILING = 256  # keeps the recursion far below Python's limit, whatever the caller asks
_MAX_ARRAY_INDEX = 2**32 - 2

# Python's own escaping (short escapes, lowercase \u00xx, raw DEL/U+2028/U+2029)
# is JSON.stringify's, except for surrogates, which _js_surrogates rewrites.
_quote: Callable[[str], str] = json.encoder.encode_basestring
_plain_dumps: Callable[[object], str] = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=False, separators=(",", ":")
).encode

_SURROGATES = re.compile("[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")
_SURROGATE_PAIRS = re.compile("[\ud800-\udbff][\udc00-\udfff]")
# Over keys joined by "\n": finds every array-index-like key (and, harmlessly, a
# few false positives from keys containing "\n", which only cost the slow path).
_INDEX_LIKE_LINE = re.compile(r"^(?:0|[1-9][0-9]*)$", re.MULTILINE)
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


class UnrepresentableJson(ValueError):
    """A value that would not survive ``JSON.parse`` then ``JSON.stringify`` unchanged.

    ``path`` names the field, e.g. ``data.items[3].count``.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class _Refusal(Exception):
    """Internal: carries the reason outwards while each level adds its path segment."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.segments: list[str | int] = []  # innermost first


def js_number(x: float) -> str:
    """``Number.prototype.toString`` of a finite double (ECMAScript Number::toString).

    >>> [js_number(v) for v in (1.0, 1e21, 1e-7, 0.000001, -0.0, 1.5e300)]
    ['1', '1e+21', '1e-7', '0.000001', '0', '1.5e+300']
    """
    try:
        x = float(x)
    except OverflowError:
        raise UnrepresentableJson("the number is too large for a double") from None
    if not math.isfinite(x):
        raise UnrepresentableJson(f"{x!r} is not a finite number; JSON has no NaN or Infinity")
    if x == 0:
        return "0"  # -0 too, like JavaScript
    if x < 0:
        return "-" + _positive_number(-x)
    return _positive_number(x)


def _positive_number(x: float) -> str:
    # repr gives the shortest round-tripping digits, closest to x on ties, which
    # is what V8 picks; only the layout differs from JavaScript.
    mantissa, _, exponent = repr(x).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    n = len(whole) + (int(exponent) if exponent else 0)  # x = 0.<digits> * 10**n
    significant = digits.lstrip("0")
    n -= len(digits) - len(significant)
    digits = significant.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    head = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{head}e{'+' if e >= 0 else '-'}{abs(e)}"


def js_dumps(value: object, *, root: str = "data", max_depth: int = MAX_DEPTH) -> str:
    """``JSON.stringify(value)`` for a value made by ``json.loads``.

    ``root`` names ``value`` in error paths; containers may nest ``max_depth``
    levels (at most 256). Raises ``UnrepresentableJson`` for anything that
    would not round-trip through ``JSON.parse`` unchanged.
    """
    if not 0 < max_depth <= _DEPTH_CEILING:
        raise ValueError(f"max_depth must be between 1 and {_DEPTH_CEILING}")
    # Fast path: when the C encoder's output is already JavaScript's (the usual
    # payload: strings, small ints, booleans, ordinary keys), use it as is.
    if _is_plain(value, max_depth):
        text = _plain_dumps(value)
        if text.isascii() or _encodes(text):
            return text
    parts: list[str] = []
    try:
        _encode(value, max_depth, parts)
    except _Refusal as refusal:
        path = _format_path(root, reversed(refusal.segments))
        reason = refusal.reason.format(max_depth=max_depth)
        raise UnrepresentableJson(f"{path} {reason}", path) from None
    text = "".join(parts)
    return text if text.isascii() else _SURROGATES.sub(_js_surrogates, text)


def _encodes(text: str) -> bool:
    """Whether ``text`` has no surrogates (measured faster than a regex search)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_plain(value: object, budget: int) -> bool:
    """Whether the C encoder writes ``value`` exactly as JSON.stringify would.

    False also for anything invalid: the slow path then reports it with a path.
    """
    if type(value) is not dict and type(value) is not list:
        return _is_plain_scalar(value)
    keys: list[Any] = []  # anything may turn up; join() then refuses
    if budget <= 0 or not _walk_plain(value, budget, keys):
        return False
    try:
        joined = "\n".join(keys)  # TypeError: a non-str key
    except TypeError:
        return False
    # Checking all keys at once, not per object, measured ~30% faster.
    return _INDEX_LIKE_LINE.search(joined) is None


def _walk_plain(value: dict[Any, Any] | list[Any], budget: int, keys: list[Any]) -> bool:
    if type(value) is dict:
        keys.extend(value)
        children: Iterable[Any] = value.values()
    else:
        children = value
    budget -= 1
    # Inlined scalar checks: this loop is most of the fast path's cost.
    for child in children:
        kind = type(child)
        if kind is str or kind is bool or child is None:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= child <= MAX_SAFE_INTEGER:
                continue
            return False
        if kind is dict or kind is list:
            if budget > 0 and _walk_plain(child, budget, keys):
                continue
            return False
        if kind is float and 1e-4 <= abs(child) < 1e16 and not child.is_integer():
            # repr and JavaScript agree here: plain notation, no ".0", no exponent.
            continue
        return False
    return True


def _is_plain_scalar(value: object) -> bool:
    if type(value) is str or type(value) is bool or value is None:
        return True
    if type(value) is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    if type(value) is float:
        return 1e-4 <= abs(value) < 1e16 and not value.is_integer()
    return False


def _encode(value: object, budget: int, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_quote(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            # str() of a huge int raises (sys.set_int_max_str_digits): say its size instead.
            bits = value.bit_length()
            shown = str(value) if bits <= 128 else f"a {bits}-bit integer"
            raise _Refusal(
                f"is {shown}, beyond ±{MAX_SAFE_INTEGER}, the integers a JavaScript number"
                " holds exactly; send such numbers as strings"
            )
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            raise _Refusal(f"is {name}, which JSON cannot represent")
        out.append(js_number(value))
    elif isinstance(value, dict):
        if budget <= 0:
            raise _Refusal("is nested deeper than {max_depth} levels")
        out.append("{")
        for position, (key, child) in enumerate(_js_items(value)):
            if position:
                out.append(",")
            out.append(_quote(key))
            out.append(":")
            try:
                _encode(child, budget - 1, out)
            except _Refusal as refusal:
                refusal.segments.append(key)
                raise
        out.append("}")
    elif isinstance(value, list):
        if budget <= 0:
            raise _Refusal("is nested deeper than {max_depth} levels")
        out.append("[")
        for index, child in enumerate(value):
            if index:
                out.append(",")
            try:
                _encode(child, budget - 1, out)
            except _Refusal as refusal:
                refusal.segments.append(index)
                raise
        out.append("]")
    else:
        raise _Refusal(f"is a {type(value).__name__}, which is not a JSON value")


def _js_items(mapping: dict[object, object]) -> list[tuple[str, object]]:
    """The members in JavaScript's property order: array indexes ascending, then the rest."""
    items: list[tuple[str, object]] = []
    paired = False
    for key, child in mapping.items():
        if not isinstance(key, str):
            raise _Refusal(
                f"has a key of type {type(key).__name__} ({key!r});"
                " JSON object keys must be strings"
            )
        paired = paired or (not key.isascii() and _SURROGATE_PAIRS.search(key) is not None)
        items.append((key, child))
    if paired:
        # In JavaScript a surrogate pair *is* the astral character, so two Python
        # keys may be one JS key: the last value wins at the first position.
        merged: dict[str, object] = {}
        for key, child in items:
            merged[_SURROGATE_PAIRS.sub(_js_surrogates, key)] = child
        items = list(merged.items())
    indexed = [(int(key), key, child) for key, child in items if _is_array_index(key)]
    if not indexed:
        return items
    indexed.sort(key=itemgetter(0))
    named = [(key, child) for key, child in items if not _is_array_index(key)]
    return [(key, child) for _, key, child in indexed] + named


def _is_array_index(key: str) -> bool:
    return (
        0 < len(key) <= 10
        and key.isascii()
        and key.isdigit()
        and (key[0] != "0" or key == "0")
        and int(key) <= _MAX_ARRAY_INDEX
    )


def _js_surrogates(match: re.Match[str]) -> str:
    found = match.group()
    if len(found) == 2:
        high, low = ord(found[0]), ord(found[1])
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    return f"\\u{ord(found):04x}"  # a lone surrogate, escaped as well-formed JSON.stringify does


def _format_path(root: str, segments: Iterable[str | int]) -> str:
    path = [root]
    for segment in segments:
        if isinstance(segment, int):
            path.append(f"[{segment}]")
        elif _IDENTIFIER.fullmatch(segment):
            path.append(f".{segment}")
        else:
            path.append(f"[{_SURROGATES.sub(_js_surrogates, _quote(segment))}]")
    return "".join(path)
