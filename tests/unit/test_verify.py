"""bellhook.verify: what receivers run."""

from __future__ import annotations

import base64
import doctest
import json
import re
import subprocess
import sys
from typing import Any

import pytest

from bellhook import verify
from bellhook.domain.jsonbytes import js_dumps
from bellhook.domain.signing import PayloadTemplate, hmac_sha256_hex, signature_headers
from bellhook.verify import (
    InvalidSignature,
    MalformedPayload,
    MissingHeader,
    TimestampOutOfTolerance,
    WebhookVerificationError,
    verify_payload,
    verify_signature,
    verify_standard,
)

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
PLAIN_SECRET = "your-webhook-secret"
NOW = 1_700_000_000


def body_for(secret: str, data: object | None = None) -> bytes:
    data_json = js_dumps(data if data is not None else {"id": "post-id", "content": "Hé ✓"})
    template = PayloadTemplate("evt_1", "post.created", "2024-01-01T00:00:00Z", data_json)
    return template.render(secret)


def test_error_hierarchy() -> None:
    for error in (InvalidSignature, MissingHeader, TimestampOutOfTolerance, MalformedPayload):
        assert issubclass(error, WebhookVerificationError)


# verify_signature


def test_verify_signature_accepts_the_header() -> None:
    body = body_for(PLAIN_SECRET)
    headers = signature_headers(body, "evt_1", NOW, [PLAIN_SECRET])
    verify_signature(body, headers["X-Webhook-Signature"], PLAIN_SECRET)
    verify_signature(body, headers["X-Webhook-Signature"].upper(), PLAIN_SECRET)


def test_verify_signature_checks_previous_header_with_old_secret() -> None:
    body = body_for(SECRET)
    headers = signature_headers(body, "evt_1", NOW, [SECRET, OLD_SECRET])
    verify_signature(body, headers["X-Webhook-Signature-Previous"], OLD_SECRET)
    with pytest.raises(InvalidSignature):
        verify_signature(body, headers["X-Webhook-Signature"], OLD_SECRET)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1] + ("0" if s[-1] != "0" else "1"),
        lambda s: " " + s,
        lambda s: s + "\n",
        lambda s: s[:-2],
        lambda s: "é" * 64,
        lambda s: "sha256=" + s,
    ],
)
def test_verify_signature_is_strict(mangle: Any) -> None:
    body = body_for(PLAIN_SECRET)
    good = hmac_sha256_hex(PLAIN_SECRET, body)
    with pytest.raises(InvalidSignature):
        verify_signature(body, mangle(good), PLAIN_SECRET)


def test_verify_signature_refuses_tampered_body_and_wrong_secret() -> None:
    body = body_for(PLAIN_SECRET)
    good = hmac_sha256_hex(PLAIN_SECRET, body)
    with pytest.raises(InvalidSignature):
        verify_signature(body.replace(b"post-id", b"post-ie"), good, PLAIN_SECRET)
    with pytest.raises(InvalidSignature):
        verify_signature(body, good, PLAIN_SECRET + "x")
    # Whitespace changes the bytes, hence the signature: verify the raw body.
    reformatted = json.dumps(json.loads(body), ensure_ascii=False).encode()
    with pytest.raises(InvalidSignature):
        verify_signature(reformatted, good, PLAIN_SECRET)


def test_verify_signature_missing() -> None:
    with pytest.raises(MissingHeader):
        verify_signature(b"{}", "", PLAIN_SECRET)


# verify_payload


def test_verify_payload_accepts_a_rendered_payload() -> None:
    data = {"3": 1, "1": [0.5, 1e21, "\u2028"], "x": None}
    verify_payload(json.loads(body_for(PLAIN_SECRET, data)), PLAIN_SECRET)
    verify_payload(json.loads(body_for(SECRET, data)), SECRET)


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("id", "evt_2"),
        ("event", "post.deleted"),
        ("timestamp", "2024-01-01T00:00:01Z"),
        ("data", {"id": "post-id", "content": "Hé ✗"}),
        ("signature", "0" * 64),
    ],
)
def test_verify_payload_refuses_tampering(member: str, value: object) -> None:
    payload = json.loads(body_for(PLAIN_SECRET))
    payload[member] = value
    with pytest.raises(InvalidSignature):
        verify_payload(payload, PLAIN_SECRET)


def test_verify_payload_refuses_wrong_secret() -> None:
    with pytest.raises(InvalidSignature):
        verify_payload(json.loads(body_for(PLAIN_SECRET)), SECRET)


@pytest.mark.parametrize("member", ["id", "event", "timestamp", "data", "signature"])
def test_verify_payload_missing_member(member: str) -> None:
    payload = json.loads(body_for(PLAIN_SECRET))
    del payload[member]
    with pytest.raises(MalformedPayload, match=member):
        verify_payload(payload, PLAIN_SECRET)


@pytest.mark.parametrize("signature", [None, 5, ""])
def test_verify_payload_bad_signature_member(signature: object) -> None:
    payload = json.loads(body_for(PLAIN_SECRET))
    payload["signature"] = signature
    with pytest.raises(MalformedPayload):
        verify_payload(payload, PLAIN_SECRET)


def test_verify_payload_unrepresentable_data() -> None:
    payload = json.loads(body_for(PLAIN_SECRET))
    payload["data"] = {"n": 2**60}
    with pytest.raises(MalformedPayload, match=re.escape("payload.data.n")):
        verify_payload(payload, PLAIN_SECRET)


# verify_standard


def standard(secrets: list[str], timestamp: int = NOW) -> tuple[bytes, dict[str, str]]:
    body = body_for(secrets[0])
    return body, signature_headers(body, "evt_1", timestamp, secrets)


def test_verify_standard_returns_the_parsed_body() -> None:
    body, headers = standard([SECRET])
    assert verify_standard(body, headers, SECRET, now=NOW) == json.loads(body)


def test_verify_standard_with_a_plain_secret() -> None:
    body, headers = standard([PLAIN_SECRET])
    assert verify_standard(body, headers, PLAIN_SECRET, now=NOW)["id"] == "evt_1"


def test_verify_standard_header_names_are_case_insensitive() -> None:
    body, headers = standard([SECRET])
    shouted = {name.upper(): value for name, value in headers.items()}
    verify_standard(body, shouted, SECRET, now=NOW)
    titled = {name.title(): value for name, value in headers.items()}
    verify_standard(body, titled, SECRET, now=NOW)


def test_verify_standard_during_rotation_accepts_either_secret() -> None:
    body, headers = standard([SECRET, OLD_SECRET])
    verify_standard(body, headers, SECRET, now=NOW)
    verify_standard(body, headers, OLD_SECRET, now=NOW)
    with pytest.raises(InvalidSignature):
        verify_standard(body, headers, PLAIN_SECRET, now=NOW)


@pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
def test_verify_standard_within_tolerance(offset: int) -> None:
    body, headers = standard([SECRET], timestamp=NOW + offset)
    verify_standard(body, headers, SECRET, now=NOW)


@pytest.mark.parametrize(("offset", "words"), [(-301, "old"), (301, "future"), (-(10**6), "old")])
def test_verify_standard_outside_tolerance(offset: int, words: str) -> None:
    body, headers = standard([SECRET], timestamp=NOW + offset)
    with pytest.raises(TimestampOutOfTolerance, match=words):
        verify_standard(body, headers, SECRET, now=NOW)


def test_verify_standard_custom_tolerance_and_real_clock() -> None:
    body, headers = standard([SECRET], timestamp=NOW - 60)
    with pytest.raises(TimestampOutOfTolerance):
        verify_standard(body, headers, SECRET, tolerance=30, now=NOW)
    verify_standard(body, headers, SECRET, tolerance=60, now=NOW)
    with pytest.raises(TimestampOutOfTolerance):  # NOW is in 2023
        verify_standard(body, headers, SECRET)


def test_verify_standard_refuses_tampering() -> None:
    body, headers = standard([SECRET])
    with pytest.raises(InvalidSignature):
        verify_standard(body.replace(b"post-id", b"post-ie"), headers, SECRET, now=NOW)
    with pytest.raises(InvalidSignature):
        verify_standard(body, {**headers, "webhook-id": "evt_2"}, SECRET, now=NOW)
    # A replayed signature with a fresh timestamp does not match.
    with pytest.raises(InvalidSignature):
        verify_standard(body, {**headers, "webhook-timestamp": str(NOW + 1)}, SECRET, now=NOW)


@pytest.mark.parametrize(
    "signature",
    ["", "v1,", "v2,{sig}", "{sig}", "v1a,{sig}", "v1,{sig}x", "v1, {sig}"],
)
def test_verify_standard_signature_list_parsing(signature: str) -> None:
    body, headers = standard([SECRET])
    good = headers["webhook-signature"].removeprefix("v1,")
    mangled = signature.format(sig=good)
    error = MissingHeader if not mangled else InvalidSignature
    with pytest.raises(error):
        verify_standard(body, {**headers, "webhook-signature": mangled}, SECRET, now=NOW)


def test_verify_standard_finds_a_match_anywhere_in_the_list() -> None:
    body, headers = standard([SECRET])
    listed = f"v2,abc v1,AAAA {headers['webhook-signature']} v1,BBBB"
    verify_standard(body, {**headers, "webhook-signature": listed}, SECRET, now=NOW)


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_standard_missing_header(name: str) -> None:
    body, headers = standard([SECRET])
    del headers[name]
    with pytest.raises(MissingHeader, match=name):
        verify_standard(body, headers, SECRET, now=NOW)
    with pytest.raises(MissingHeader, match=name):
        verify_standard(body, {**headers, name: ""}, SECRET, now=NOW)


@pytest.mark.parametrize("timestamp", ["1.7e9", "-1", " 1700000000", "soon", "\uff11\uff17"])
def test_verify_standard_malformed_timestamp(timestamp: str) -> None:
    body, headers = standard([SECRET])
    with pytest.raises(InvalidSignature, match="webhook-timestamp"):
        verify_standard(body, {**headers, "webhook-timestamp": timestamp}, SECRET, now=NOW)


def test_verify_standard_malformed_body() -> None:
    body = b"not json \xff"
    headers = signature_headers(body, "evt_1", NOW, [SECRET])
    with pytest.raises(MalformedPayload):
        verify_standard(body, headers, SECRET, now=NOW)


def test_docstring_examples() -> None:
    assert doctest.testmod(verify).failed == 0


def test_import_loads_no_third_party_module() -> None:
    script = (
        "import sys\n"
        "import bellhook.verify\n"
        "banned = {'fastapi', 'pydantic', 'pydantic_core', 'sqlalchemy', 'aiohttp', 'starlette',\n"
        "          'structlog', 'typer', 'rich', 'alembic', 'asyncpg', 'aiosqlite', 'uvicorn',\n"
        "          'prometheus_client', 'cryptography'}\n"
        "stdlib = sys.stdlib_module_names\n"
        "loaded = {name.split('.')[0] for name in sys.modules}\n"
        "foreign = sorted(n for n in loaded if n not in stdlib and n != 'bellhook'\n"
        "                 and not n.startswith('_'))\n"
        "print(sorted(loaded & banned), foreign)\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[] []", result.stdout + result.stderr
