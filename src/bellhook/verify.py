"""Verify bellhook webhook deliveries in a Python receiver.

Standard library only (it loads ``bellhook.domain.jsonbytes`` and
``bellhook.domain.signing``, which are too), so a receiver can vendor these
three files instead of installing bellhook. Three checks, pick one:

* ``verify_standard`` checks the Standard Webhooks headers (``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature``) over the raw body and refuses
  stale or future timestamps, which stops replays. Prefer it.
* ``verify_signature`` checks ``X-Webhook-Signature``, the hex HMAC-SHA256 of
  the raw body keyed with the secret's UTF-8 bytes (the webhooks guide's check).
* ``verify_payload`` checks the payload's own ``signature`` member, e.g. for a
  payload you stored and want to re-check later.

Each raises a ``WebhookVerificationError`` subclass on failure:

>>> import json, time
>>> from bellhook.domain.signing import PayloadTemplate, signature_headers
>>> secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
>>> template = PayloadTemplate("evt_1", "post.created", "2024-01-01T00:00:00Z", '{"id":"p1"}')
>>> body = template.render(secret)
>>> headers = signature_headers(body, "evt_1", int(time.time()), [secret])
>>> verify_standard(body, headers, secret)["data"]
{'id': 'p1'}
>>> verify_signature(body, headers["X-Webhook-Signature"], secret)
>>> verify_payload(json.loads(body), secret)
>>> verify_signature(body.replace(b"p1", b"p2"), headers["X-Webhook-Signature"], secret)
Traceback (most recent call last):
    ...
bellhook.verify.InvalidSignature: X-Webhook-Signature does not match the body
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from bellhook.domain.jsonbytes import UnrepresentableJson, js_dumps
from bellhook.domain.signing import hmac_sha256_hex, standard_signature

__all__ = [
    "InvalidSignature",
    "MalformedPayload",
    "MissingHeader",
    "TimestampOutOfTolerance",
    "WebhookVerificationError",
    "verify_payload",
    "verify_signature",
    "verify_standard",
]

DEFAULT_TOLERANCE = 300  # seconds; what the Standard Webhooks libraries use
_SIGNED_MEMBERS = ("id", "event", "timestamp", "data")


class WebhookVerificationError(Exception):
    """A delivery failed verification; answer it with 400 or 401 and do not process it."""


class InvalidSignature(WebhookVerificationError):
    """No signature matches: wrong secret, altered body, or not from bellhook."""


class MissingHeader(WebhookVerificationError):
    """A header the check needs is absent or empty."""


class TimestampOutOfTolerance(WebhookVerificationError):
    """``webhook-timestamp`` is further from now than the tolerance (a replay, or a bad clock)."""


class MalformedPayload(WebhookVerificationError):
    """The body or payload is not the JSON object bellhook sends."""


def verify_signature(body: bytes, signature: str, secret: str) -> None:
    """Check ``X-Webhook-Signature`` against the exact body bytes.

    ``signature`` is the header's value: lowercase hex (uppercase accepted),
    without surrounding spaces. The comparison is constant-time.

    >>> from bellhook.domain.signing import hmac_sha256_hex
    >>> body, secret = b'{"event":"post.created"}', "s3cret-s3cret-s3cret"
    >>> verify_signature(body, hmac_sha256_hex(secret, body), secret)
    >>> verify_signature(body, "", secret)
    Traceback (most recent call last):
        ...
    bellhook.verify.MissingHeader: the X-Webhook-Signature header is missing or empty
    """
    if not signature:
        raise MissingHeader("the X-Webhook-Signature header is missing or empty")
    expected = hmac_sha256_hex(secret, body)
    # compare_digest refuses non-ASCII str; such a value cannot match anyway.
    if not signature.isascii() or not hmac.compare_digest(expected, signature.lower()):
        raise InvalidSignature("X-Webhook-Signature does not match the body")


def verify_payload(payload: Mapping[str, Any], secret: str) -> None:
    """Check a parsed payload's ``signature`` member.

    It is the hex HMAC-SHA256 of ``JSON.stringify({id, event, timestamp, data})``,
    recomputed here with ``js_dumps``. Parse the body with plain ``json.loads``
    (no ``parse_float=Decimal`` or similar).

    >>> import json
    >>> from bellhook.domain.signing import PayloadTemplate
    >>> secret = "s3cret-s3cret-s3cret"
    >>> template = PayloadTemplate("evt_1", "post.created", "2024-01-01T00:00:00Z", "{}")
    >>> payload = json.loads(template.render(secret))
    >>> verify_payload(payload, secret)
    >>> verify_payload({**payload, "event": "post.deleted"}, secret)
    Traceback (most recent call last):
        ...
    bellhook.verify.InvalidSignature: the payload's signature does not match its content
    """
    try:
        signature = payload["signature"]
        unsigned = {name: payload[name] for name in _SIGNED_MEMBERS}
    except KeyError as missing:
        raise MalformedPayload(f"the payload has no {missing.args[0]!r} member") from None
    if not isinstance(signature, str) or not signature:
        raise MalformedPayload("the payload's signature member is not a non-empty string")
    try:
        text = js_dumps(unsigned, root="payload")
    except UnrepresentableJson as error:
        raise MalformedPayload(error.message) from error
    try:
        verify_signature(text.encode(), signature, secret)
    except InvalidSignature:
        raise InvalidSignature("the payload's signature does not match its content") from None


def verify_standard(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> Any:
    """Check the Standard Webhooks headers and return the parsed body.

    Header names are matched case-insensitively. ``webhook-timestamp`` must be
    within ``tolerance`` seconds of ``now`` (default: the current time) either
    way. ``webhook-signature`` lists space-separated ``v1,<base64>`` signatures
    (two during a secret rotation); one match is enough.

    >>> from bellhook.domain.signing import signature_headers
    >>> body, secret = b'{"id":"evt_1"}', "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    >>> headers = signature_headers(body, "evt_1", 1_700_000_000, [secret])
    >>> verify_standard(body, headers, secret, now=1_700_000_100)
    {'id': 'evt_1'}
    >>> verify_standard(body, headers, secret, now=1_700_000_400)
    Traceback (most recent call last):
        ...
    bellhook.verify.TimestampOutOfTolerance: webhook-timestamp is 400 s old (tolerance: 300 s)
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = _required(lowered, "webhook-id")
    timestamp_text = _required(lowered, "webhook-timestamp")
    signatures = _required(lowered, "webhook-signature")
    if not (timestamp_text.isascii() and timestamp_text.isdigit()):
        raise InvalidSignature("webhook-timestamp is not a Unix time in whole seconds")
    timestamp = int(timestamp_text)
    current = time.time() if now is None else now
    if current - timestamp > tolerance:
        raise TimestampOutOfTolerance(
            f"webhook-timestamp is {current - timestamp:.0f} s old (tolerance: {tolerance} s)"
        )
    if timestamp - current > tolerance:
        raise TimestampOutOfTolerance(
            f"webhook-timestamp is {timestamp - current:.0f} s in the future"
            f" (tolerance: {tolerance} s)"
        )
    expected = standard_signature(secret, msg_id, timestamp, body).encode()
    matched = False
    for candidate in signatures.split(" "):
        if candidate.startswith("v1,"):
            # No early exit: every candidate costs the same comparison.
            matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise InvalidSignature("no webhook-signature matches the body")
    try:
        return json.loads(body)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise MalformedPayload(f"the body is not JSON: {error}") from None


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise MissingHeader(f"the {name} header is missing or empty")
    return value
