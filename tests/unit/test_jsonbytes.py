"""js_dumps / js_number against vectors taken from Node's JSON.stringify."""

from __future__ import annotations

import doctest
import json
import math
import sys
from collections import OrderedDict
from datetime import datetime
from decimal import Decimal
from enum import IntEnum
from typing import Any

import pytest

from bellhook.domain import jsonbytes
from bellhook.domain.jsonbytes import (
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    UnrepresentableJson,
    js_dumps,
    js_number,
)

# (Python float, what Node prints for it), from `node -e 'JSON.stringify(x)'`.
NUMBER_VECTORS = [
    (1.0, "1"),
    (1e21, "1e+21"),
    (1e20, "100000000000000000000"),
    (1e16, "10000000000000000"),
    (1e15, "1000000000000000"),
    (1.5e15, "1500000000000000"),
    (1e-7, "1e-7"),
    (5e-7, "5e-7"),
    (0.000001, "0.000001"),
    (1.5e-6, "0.0000015"),
    (0.0001, "0.0001"),
    (0.00012345, "0.00012345"),
    (-1e-5, "-0.00001"),
    (-0.0, "0"),
    (0.0, "0"),
    (1.5e300, "1.5e+300"),
    (1e301, "1e+301"),
    (1e23, "1e+23"),
    (5e-324, "5e-324"),
    (2.2250738585072014e-308, "2.2250738585072014e-308"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (2.0**60, "1152921504606847000"),
    (12345678901234567890.0, "12345678901234567000"),
    (2.0**53, "9007199254740992"),
    (123.456, "123.456"),
    (4.35, "4.35"),
    (0.1, "0.1"),
    (0.3, "0.3"),
    (1 / 3, "0.3333333333333333"),
    (-2 / 3, "-0.6666666666666666"),
    (1.23e-18, "1.23e-18"),
    (100.0, "100"),
]


@pytest.mark.parametrize(("value", "expected"), NUMBER_VECTORS)
def test_js_number_matches_node(value: float, expected: str) -> None:
    assert js_number(value) == expected


@pytest.mark.parametrize(("value", "expected"), NUMBER_VECTORS)
def test_js_dumps_formats_floats_like_node(value: float, expected: str) -> None:
    assert js_dumps(value) == expected
    assert js_dumps([value]) == f"[{expected}]"
    assert js_dumps({"n": value}) == f'{{"n":{expected}}}'


def test_js_number_takes_ints_and_refuses_non_finite() -> None:
    assert js_number(7) == "7"
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(UnrepresentableJson):
            js_number(bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (-7, "-7"),
        (MAX_SAFE_INTEGER, "9007199254740991"),
        (-MAX_SAFE_INTEGER, "-9007199254740991"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ("", '""'),
        ([], "[]"),
        ({}, "{}"),
        ([1, [2, [3]], {"a": []}], '[1,[2,[3]],{"a":[]}]'),
        ({"a": 1, "b": [True, None, "x"]}, '{"a":1,"b":[true,null,"x"]}'),
    ],
)
def test_plain_values(value: object, expected: str) -> None:
    assert js_dumps(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"', r'"\""'),
        ("\\", r'"\\"'),
        ("/", '"/"'),
        ("\b\f\n\r\t", r'"\b\f\n\r\t"'),
        ("\x00\x01\x0b\x1f", r'"\u0000\u0001\u000b\u001f"'),
        ("\x7f", '"\x7f"'),  # DEL stays raw, as in JavaScript
        ("\u2028\u2029", '"\u2028\u2029"'),  # so do the line/paragraph separators
        ("é ü 你好 📚", '"é ü 你好 📚"'),
        ("\ud800", r'"\ud800"'),  # lone surrogates: escaped, lowercase
        ("a\udfffb", r'"a\udfffb"'),
        ("\udbff\ud800", r'"\udbff\ud800"'),  # two highs are two lone surrogates
        ("\udc00\ud800", r'"\udc00\ud800"'),  # low before high: not a pair
        ("\ud83d\udcda", '"📚"'),  # a pair of code points *is* the astral char in JS
        ("x\ud83d\udcda\ud800", '"x📚\\ud800"'),
    ],
)
def test_string_escapes(text: str, expected: str) -> None:
    assert js_dumps(text) == expected
    assert js_dumps([text]) == f"[{expected}]"
    assert js_dumps({text: 1}) == f"{{{expected}:1}}"
    js_dumps(text).encode()  # always encodable: no raw surrogate survives


def test_key_order_puts_array_indexes_first() -> None:
    value = {
        "b": 1, "a": 2, "1": 3, "0": 4, "00": 5, "01": 6, "-1": 7, "-0": 8, "1.0": 9,
        "4294967294": 10, "4294967295": 11, "4294967296": 12, "": 13, " 1": 14, "1 ": 15,
        "9": 16, "10": 17, "٣": 18, "1e3": 19,
    }  # fmt: skip
    # From node: JSON.stringify of the same object literal.
    assert js_dumps(value) == (
        '{"0":4,"1":3,"9":16,"10":17,"4294967294":10,"b":1,"a":2,"00":5,"01":6,"-1":7,'
        '"-0":8,"1.0":9,"4294967295":11,"4294967296":12,"":13," 1":14,"1 ":15,"٣":18,"1e3":19}'
    )


def test_nested_key_order() -> None:
    value = {"votes": {"2": "b", "1": "a"}, "items": [{"z": 1, "10": 2, "3": 3}]}
    assert js_dumps(value) == '{"votes":{"1":"a","2":"b"},"items":[{"3":3,"10":2,"z":1}]}'


def test_duplicate_keys_keep_first_position_and_last_value_like_json_parse() -> None:
    # Python's json.loads and JavaScript's JSON.parse agree: the first position
    # and the last value.
    value = json.loads('{"a": 1, "b": 2, "a": 3}')
    assert js_dumps(value) == '{"a":3,"b":2}'


def test_keys_that_are_one_key_in_javascript_are_merged() -> None:
    # "\ud83d\udcda" (two code points) and "📚" are the same JavaScript string.
    value = {"\ud83d\udcda": 1, "x": 2, "📚": 3}
    assert js_dumps(value) == '{"📚":3,"x":2}'


def test_output_round_trips_through_python_json() -> None:
    value = {"a": [1, 2.5, "é", {"3": None}], "1": False}
    assert json.loads(js_dumps(value)) == value


def test_accepts_subclasses_of_json_types() -> None:
    class Level(IntEnum):
        HIGH = 3

    class Tag(str):
        pass

    value = OrderedDict([(Tag("k"), Level.HIGH), ("s", Tag("v"))])
    assert js_dumps(value) == '{"k":3,"s":"v"}'


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ({"items": [1, 2, 3, {"count": math.nan}]}, "data.items[3].count", "NaN"),
        ({"a": math.inf}, "data.a", "Infinity"),
        ({"a": [-math.inf]}, "data.a[0]", "-Infinity"),
        ({"n": 2**53}, "data.n", "as strings"),
        ({"n": -(2**53)}, "data.n", "as strings"),
        ({"n": 10**400}, "data.n", "as strings"),
        ({"n": -(10**5000)}, "data.n", "16610-bit integer"),
        ([{"x y": [2**64]}], 'data[0]["x y"][0]', "as strings"),
        ({"k": {1: "a"}}, "data.k", "keys must be strings"),
        ({"k": {None: "a"}}, "data.k", "keys must be strings"),
        ({"when": datetime(2024, 1, 1)}, "data.when", "datetime"),
        ({"price": Decimal("1.5")}, "data.price", "Decimal"),
        ({"t": (1, 2)}, "data.t", "tuple"),
        ({"s": {1, 2}}, "data.s", "set"),
        ({"b": b"x"}, "data.b", "bytes"),
        (math.nan, "data", "NaN"),
        ({"\ud800": [math.nan]}, 'data["\\ud800"][0]', "NaN"),
    ],
)
def test_refusals_name_the_field(value: object, path: str, words: str) -> None:
    with pytest.raises(UnrepresentableJson) as caught:
        js_dumps(value)
    assert caught.value.path == path
    assert words in caught.value.message
    assert str(caught.value).startswith(path)
    assert isinstance(caught.value, ValueError)


def test_refusal_root_name() -> None:
    with pytest.raises(UnrepresentableJson) as caught:
        js_dumps({"a": math.nan}, root="payload")
    assert caught.value.path == "payload.a"


def test_big_integers_are_refused_with_advice() -> None:
    with pytest.raises(UnrepresentableJson, match="send such numbers as strings"):
        js_dumps({"id": 9007199254740993})


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


def test_depth_limit_allows_max_depth_levels() -> None:
    assert js_dumps(nested(MAX_DEPTH)).count("[") + js_dumps(nested(MAX_DEPTH)).count("{") == 64
    with pytest.raises(UnrepresentableJson, match="deeper than 64 levels"):
        js_dumps(nested(MAX_DEPTH + 1))
    assert js_dumps(nested(3), max_depth=3) == '{"a":[{"a":1}]}'
    with pytest.raises(UnrepresentableJson):
        js_dumps(nested(4), max_depth=3)


def test_very_deep_nesting_is_refused_without_recursion_error() -> None:
    deep = nested(sys.getrecursionlimit() * 3)
    with pytest.raises(UnrepresentableJson) as caught:
        js_dumps(deep)
    assert "deeper than 64 levels" in caught.value.message
    # json.loads builds such values too; they are refused the same way.
    parsed = json.loads("[" * 500 + "]" * 500)
    with pytest.raises(UnrepresentableJson):
        js_dumps(parsed)


def test_cycles_are_refused() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(UnrepresentableJson):
        js_dumps(cycle)
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(UnrepresentableJson):
        js_dumps(loop)


def test_max_depth_argument_is_bounded() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        js_dumps([], max_depth=0)
    with pytest.raises(ValueError, match="max_depth"):
        js_dumps([], max_depth=10_000)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": "x", "c": [True, None, {"d": -5}]},
        {"lat": 48.8566, "lng": -2.3522, "r": 0.0001, "big": 9007199254740.5},
        {"text": "Привет 📚 \u2028", "n": MAX_SAFE_INTEGER},
    ],
)
def test_fast_path_agrees_with_slow_path(value: object) -> None:
    assert jsonbytes._is_plain(value, MAX_DEPTH)
    slow: list[str] = []
    jsonbytes._encode(value, MAX_DEPTH, slow)
    assert js_dumps(value) == "".join(slow)


@pytest.mark.parametrize(
    "value",
    [
        {"x": 1.0},  # integral float: "1.0" in Python
        {"x": 1e-5},  # exponent in Python, not in JavaScript
        {"x": 1e16},
        {"x": -0.0},
        {"1": "index key"},
        {"a": {"b": {"0": 1}}},
        {"x": 2**53},
        {1: "non-str key"},
        {"x": (1,)},
        nested(MAX_DEPTH + 1),
    ],
)
def test_fast_path_declines_what_it_cannot_write(value: object) -> None:
    assert not jsonbytes._is_plain(value, MAX_DEPTH)


def test_docstring_examples() -> None:
    assert doctest.testmod(jsonbytes).failed == 0
