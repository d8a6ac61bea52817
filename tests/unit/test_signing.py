"""Signatures: the spec vector, payload bodies and headers, and the official verifier."""

from __future__ import annotations

import base64
import doctest
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bellhook.domain import signing
from bellhook.domain.jsonbytes import js_dumps
from bellhook.domain.signing import (
    PayloadTemplate,
    hmac_sha256_hex,
    signature_headers,
    standard_signature,
    standard_webhooks_key,
)

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

CURRENT = "whsec_" + base64.b64encode(b"c" * 32).decode()
PREVIOUS = "whsec_" + base64.b64encode(b"p" * 32).decode()


def test_standard_webhooks_spec_vector() -> None:
    assert standard_signature(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_hmac_sha256_hex_keys_with_utf8_bytes() -> None:
    expected = hmac.new("clé-secrète".encode(), b"body", hashlib.sha256).hexdigest()
    assert hmac_sha256_hex("clé-secrète", b"body") == expected
    # RFC 4231 test case 2.
    assert hmac_sha256_hex("Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        (SPEC_SECRET, base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
        ("whsec_YWJj", b"abc"),
        ("whsec_YWI", b"ab"),  # unpadded, as the official libraries accept
        ("whsec_YWI=", b"ab"),
        ("plain-secret-1234", b"plain-secret-1234"),
        ("clé-secrète-1234", "clé-secrète-1234".encode()),
        ("whsec_not base64!", b"whsec_not base64!"),
        ("whsec_", b"whsec_"),  # decodes to nothing: the secret itself
        ("xwhsec_YWJj", b"xwhsec_YWJj"),
    ],
)
def test_standard_webhooks_key(secret: str, key: bytes) -> None:
    assert standard_webhooks_key(secret) == key


def test_payload_template_structure() -> None:
    data = {"id": "post-id", "content": "Hé \u2028", "2": 1, "1": 0.5}
    template = PayloadTemplate("evt_1", "post.created", "2024-01-01T00:00:00Z", js_dumps(data))
    body = template.render("k" * 16)
    payload = json.loads(body)
    assert list(payload) == ["id", "event", "timestamp", "data", "signature"]
    assert payload["id"] == "evt_1"
    assert payload["event"] == "post.created"
    assert payload["timestamp"] == "2024-01-01T00:00:00Z"
    assert payload["data"] == data
    # The body is its own JSON.stringify(JSON.parse(body)).
    assert js_dumps(payload).encode() == body
    assert body.startswith(template.prefix)
    assert template.unsigned == template.prefix + b"}"


def test_payload_signature_member_signs_the_payload_without_it() -> None:
    template = PayloadTemplate("evt_1", "post.created", "2024-01-01T00:00:00Z", '{"a":[1,"x"]}')
    payload = json.loads(template.render("secret-one-1234567"))
    unsigned = {name: payload[name] for name in ("id", "event", "timestamp", "data")}
    expected = hmac_sha256_hex("secret-one-1234567", js_dumps(unsigned).encode())
    assert payload["signature"] == expected
    assert json.loads(template.render("secret-two-1234567"))["signature"] != expected


def test_payload_template_escapes_its_strings() -> None:
    template = PayloadTemplate('evt_"1"', "a\nb", "2024-01-01T00:00:00Z", "null")
    assert template.prefix == (
        b'{"id":"evt_\\"1\\"","event":"a\\nb","timestamp":"2024-01-01T00:00:00Z","data":null'
    )
    assert json.loads(template.render("k" * 16))["id"] == 'evt_"1"'


def test_render_is_stable_per_secret() -> None:
    template = PayloadTemplate("evt_1", "post.created", "2024-01-01T00:00:00Z", "{}")
    assert template.render("k" * 16) == template.render("k" * 16)


def test_signature_headers_with_one_secret() -> None:
    body = b'{"id":"evt_1"}'
    headers = signature_headers(body, "evt_1", 1_700_000_000, [CURRENT])
    assert headers == {
        "X-Webhook-Signature": hmac_sha256_hex(CURRENT, body),
        "webhook-id": "evt_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": standard_signature(CURRENT, "evt_1", 1_700_000_000, body),
    }


def test_signature_headers_with_two_secrets() -> None:
    body = b'{"id":"evt_1"}'
    headers = signature_headers(body, "evt_1", 1_700_000_000, (CURRENT, PREVIOUS))
    assert headers["X-Webhook-Signature"] == hmac_sha256_hex(CURRENT, body)
    assert headers["X-Webhook-Signature-Previous"] == hmac_sha256_hex(PREVIOUS, body)
    assert headers["webhook-signature"] == " ".join(
        (
            standard_signature(CURRENT, "evt_1", 1_700_000_000, body),
            standard_signature(PREVIOUS, "evt_1", 1_700_000_000, body),
        )
    )


@pytest.mark.parametrize("secrets", [[], ["a" * 16, "b" * 16, "c" * 16]])
def test_signature_headers_takes_one_or_two_secrets(secrets: list[str]) -> None:
    with pytest.raises(ValueError, match="previous"):
        signature_headers(b"{}", "evt_1", 1, secrets)


def rendered(secret: str) -> bytes:
    data = js_dumps({"id": "post-id", "content": "Post content ✓", "authorId": "user-id"})
    return PayloadTemplate("evt_1", "post.created", "2024-01-01T00:00:00Z", data).render(secret)


def test_official_library_verifies_our_headers() -> None:
    body = rendered(CURRENT)
    headers = signature_headers(body, "evt_1", int(time.time()), [CURRENT])
    assert Webhook(CURRENT).verify(body, headers) == json.loads(body)


def test_official_library_verifies_with_either_secret_during_rotation() -> None:
    body = rendered(CURRENT)
    headers = signature_headers(body, "evt_1", int(time.time()), [CURRENT, PREVIOUS])
    assert Webhook(CURRENT).verify(body, headers)["event"] == "post.created"
    assert Webhook(PREVIOUS).verify(body, headers)["event"] == "post.created"
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


def test_official_library_refuses_a_tampered_body() -> None:
    body = rendered(CURRENT)
    headers = signature_headers(body, "evt_1", int(time.time()), [CURRENT])
    with pytest.raises(WebhookVerificationError):
        Webhook(CURRENT).verify(body.replace(b"Post", b"Toast"), headers)


def test_official_library_with_a_plain_secret_takes_its_bytes() -> None:
    # A secret not of the whsec_ form is keyed by its UTF-8 bytes, so receivers
    # pass bytes to the library (a str would be base64-decoded).
    secret = "your-webhook-secret"
    body = rendered(secret)
    headers = signature_headers(body, "evt_1", int(time.time()), [secret, CURRENT])
    assert Webhook(secret.encode()).verify(body, headers)["id"] == "evt_1"
    assert Webhook(CURRENT).verify(body, headers)["id"] == "evt_1"


def test_docstring_examples() -> None:
    assert doctest.testmod(signing).failed == 0
