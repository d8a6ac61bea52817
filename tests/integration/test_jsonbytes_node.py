"""js_dumps and payload bodies against Node itself: JSON.stringify(JSON.parse(x)).

One long-lived ``node`` process answers newline-delimited requests. Requests
are ASCII JSON (``ensure_ascii``), so lone surrogates survive the trip; answers
are UTF-8, well-formed because JSON.stringify escapes lone surrogates.
Without ``node`` on PATH these tests fail: they are the proof the bodies verify.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bellhook.domain.jsonbytes import MAX_SAFE_INTEGER, js_dumps
from bellhook.domain.signing import PayloadTemplate, hmac_sha256_hex

# Request: [mode, json_text, secret?]. "stringify" answers JSON.stringify(JSON.parse(text));
# "receive" answers "<hmac of the re-serialized body> <hmac of {id,event,timestamp,data}> <it>",
# i.e. what the guide's Express receiver computes with express.json().
NODE_SCRIPT = r"""
const crypto = require('crypto');
const readline = require('readline');
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  let answer;
  try {
    const [mode, text, secret] = JSON.parse(line);
    const body = JSON.parse(text);
    const out = JSON.stringify(body);
    if (mode === 'receive') {
      const hex = crypto.createHmac('sha256', secret).update(out).digest('hex');
      const { id, event, timestamp, data } = body;
      const unsigned = JSON.stringify({ id, event, timestamp, data });
      const member = crypto.createHmac('sha256', secret).update(unsigned).digest('hex');
      answer = hex + ' ' + member + ' ' + out;
    } else {
      answer = out;
    }
  } catch (error) {
    answer = 'ERROR ' + JSON.stringify(String(error));
  }
  process.stdout.write(answer + '\n');
});
"""


class Node:
    """A lazily started ``node`` process; failing, not skipping, when node is missing."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            executable = shutil.which("node")
            if executable is None:
                pytest.fail(
                    "node is not on PATH: these tests check bodies against Node's"
                    " JSON.stringify and must not be skipped; install Node.js (>= 18)",
                    pytrace=False,
                )
            self._process = subprocess.Popen(
                [executable, "-e", NODE_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        return self._process

    def ask(self, mode: str, text: str, secret: str = "") -> str:
        process = self._started()
        assert process.stdin is not None and process.stdout is not None
        request = json.dumps([mode, text, secret], ensure_ascii=True)
        process.stdin.write(request.encode("ascii") + b"\n")
        process.stdin.flush()
        answer = process.stdout.readline()
        assert answer.endswith(b"\n"), f"node stopped (exit code {process.poll()})"
        decoded = answer[:-1].decode("utf-8")  # strict: a stray surrogate would fail here
        assert not decoded.startswith("ERROR "), decoded
        return decoded

    def stringify(self, text: str) -> str:
        return self.ask("stringify", text)

    def close(self) -> None:
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    runner = Node()
    try:
        yield runner
    finally:
        runner.close()


def transported(value: object) -> str:
    """The value as Python writes it: ASCII, so lone surrogates travel as escapes."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


# Strategies ---------------------------------------------------------------

SPECIAL_CHARS = st.sampled_from(
    ['"', "\\", "/", "\x7f", "\x80", "\u2028", "\u2029", "\ufeff", "\uffff", "\U0010ffff",
     "\U0001f4da", "é", "\ud83d", "\udcda", "\u0000", "\u001f"]
)  # fmt: skip
CHARS = st.one_of(
    st.characters(exclude_categories=()),  # every code point, surrogates included
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
    st.characters(max_codepoint=0x1F),
    SPECIAL_CHARS,
)
TEXT = st.text(CHARS, max_size=12)
KEYS = st.one_of(
    TEXT,
    st.integers(0, 20).map(str),
    st.integers(0, 2**32 + 2).map(str),
    st.integers(2**32 - 4, 2**32 + 1).map(str),
    st.sampled_from(
        ["0", "00", "01", "-0", "-1", "1.0", "1e3", " 1", "1 ", "+1", "4294967294",
         "4294967295", "4294967296", "9007199254740993", "__proto__", "constructor",
         "toString", "", "\u0663", "a", "b"]
    ),
)  # fmt: skip
FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),  # whole range, subnormals, -0.0
    st.floats(min_value=-1e-300, max_value=1e-300, allow_nan=False),
    st.integers(-(2**70), 2**70).map(float),
    st.builds(lambda m, e: m * 10.0**e, st.integers(-9999, 9999), st.integers(-12, 25)),
    st.sampled_from([-0.0, 5e-324, 1e21, 1e21 - 131072, 1e-7, 1e-6, 9.999999999999999e-7,
                     1e16, 2.0**53, 2.0**53 + 2, 0.1 + 0.2, 1.7976931348623157e308]),
)  # fmt: skip
INTS = st.one_of(
    st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
    st.integers(-1000, 1000),
    st.sampled_from([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0, 10**15, 10**15 - 1, 2**53 - 2]),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)
SECRETS = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40),
    st.binary(min_size=32, max_size=32).map(lambda key: "whsec_" + base64.b64encode(key).decode()),
)
TIMESTAMPS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda moment: moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
)


# Tests --------------------------------------------------------------------


def test_js_dumps_equals_node_json_stringify(node: Node) -> None:
    node.stringify("null")  # fails here, outside Hypothesis, when node is missing

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(JSON_VALUES)
    def check(value: Any) -> None:
        expected = node.stringify(transported(value))
        assert js_dumps(value) == expected
        assert js_dumps(value).encode() == expected.encode()

    check()


@pytest.mark.parametrize(
    "value",
    [
        -0.0, 5e-324, 2.2250738585072014e-308, 1e21, 1e21 - 131072, 1e-7, 9.999999999999999e-8,
        1e-6, 9.999999999999999e-7, 0.1 + 0.2, 2.0**53 + 2, 2.0**60, 1.7976931348623157e308,
        123456789012345680000.0, 4.35, 0.000123, -1.5e-300, 1e300 * 10,
    ],
)  # fmt: skip
def test_edge_floats_equal_node(node: Node, value: float) -> None:
    assert math.isfinite(value)
    assert js_dumps(value) == node.stringify(transported(value))
    assert js_dumps({"x": [value]}) == node.stringify(transported({"x": [value]}))


def test_escapes_and_key_order_equal_node(node: Node) -> None:
    value = {
        "b": "".join(chr(c) for c in range(0x20)) + '\x7f\u2028\u2029"\\/',
        "2": "\ud800 \udfff \ud83d\udcda \udbff\ud800",
        "10": {"1": 1, "0": [1.0, -0.0]},
        "\ud83d\udcda": 1,
        "\U0001f4da": 2,
        "4294967295": 3,
        "4294967294": 4,
        "__proto__": {"x": 1},
    }
    assert js_dumps(value) == node.stringify(transported(value))


def test_payload_body_verifies_like_the_guides_receiver(node: Node) -> None:
    node.stringify("null")

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(TEXT, TEXT, TIMESTAMPS, JSON_VALUES, SECRETS)
    def check(event_id: str, event_type: str, timestamp: str, data: Any, secret: str) -> None:
        body = PayloadTemplate(event_id, event_type, timestamp, js_dumps(data)).render(secret)
        header_hex, member_hex, restringified = node.ask("receive", body.decode(), secret).split(
            " ", 2
        )
        assert restringified.encode() == body  # JSON.stringify(JSON.parse(body)) is the body
        assert header_hex == hmac_sha256_hex(secret, body)  # X-Webhook-Signature verifies
        assert member_hex == json.loads(body)["signature"]  # so does the payload member

    check()


def test_node_missing_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    runner = Node()
    with pytest.raises(pytest.fail.Exception, match="node is not on PATH"):
        runner.stringify("null")
    assert sys.executable  # the interpreter itself needs no PATH
