"""Webhook signatures: the guide's hex HMAC and Standard Webhooks' ``v1``.

Every delivery carries two schemes over the same body bytes:

* ``X-Webhook-Signature``: hex HMAC-SHA256 keyed with the secret's UTF-8 bytes,
  what the webhooks guide's receivers compute over ``JSON.stringify(req.body)``.
  Bodies are written by ``js_dumps`` so that re-serialization gives them back.
* ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``: the Standard
  Webhooks scheme, which off-the-shelf libraries verify over the raw bytes.

The payload's own ``signature`` member signs the payload without that member,
so a stored payload can be checked long after its headers are gone.
Standard library only: ``bellhook.verify`` ships this module to receivers.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence

from bellhook.domain.jsonbytes import js_dumps

__all__ = [
    "PayloadTemplate",
    "hmac_sha256_hex",
    "signature_headers",
    "standard_signature",
    "standard_webhooks_key",
]

_WHSEC_PREFIX = "whsec_"


def hmac_sha256_hex(secret: str, message: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``message`` keyed with ``secret``'s UTF-8 bytes.

    Node's ``crypto.createHmac('sha256', secret).update(message).digest('hex')``.
    """
    return hmac.digest(secret.encode(), message, "sha256").hex()


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key Standard Webhooks derives from ``secret``.

    ``whsec_<base64>`` gives the decoded bytes (padding optional, as the official
    libraries accept); any other secret, or one that does not decode to at least
    one byte, is used as its UTF-8 bytes.
    """
    if secret.startswith(_WHSEC_PREFIX):
        encoded = secret[len(_WHSEC_PREFIX) :]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
    return secret.encode()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">``, the Standard Webhooks form.

    >>> standard_signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ...                    "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
    """
    key = standard_webhooks_key(secret)
    return _v1(key, _signed_prefix(msg_id, timestamp) + body)


def _signed_prefix(msg_id: str, timestamp: int) -> bytes:
    return f"{msg_id}.{timestamp}.".encode()


def _v1(key: bytes, signed: bytes) -> str:
    # binascii rather than base64.b64encode: the same bytes, without a Python wrapper.
    return "v1," + binascii.b2a_base64(hmac.digest(key, signed, "sha256"), newline=False).decode()


class PayloadTemplate:
    """The delivery body of one event, rendered per webhook secret.

    Built once per event; ``render`` only adds the payload's ``signature`` member,
    the hex HMAC of ``{"id","event","timestamp","data"}`` exactly as
    ``JSON.stringify`` writes that object (the body minus its last member).
    ``data_json`` must be ``js_dumps`` output; ``timestamp`` is ISO 8601 UTC
    ending in ``Z``.
    """

    __slots__ = ("_unsigned", "prefix")

    def __init__(self, event_id: str, event_type: str, timestamp: str, data_json: str) -> None:
        text = (
            f'{{"id":{js_dumps(event_id, root="id")},'
            f'"event":{js_dumps(event_type, root="event")},'
            f'"timestamp":{js_dumps(timestamp, root="timestamp")},'
            f'"data":{data_json}'
        )
        self.prefix: bytes = text.encode()
        self._unsigned = self.prefix + b"}"

    @property
    def unsigned(self) -> bytes:
        """``JSON.stringify({id, event, timestamp, data})``: what the ``signature`` member signs."""
        return self._unsigned

    def render(self, secret: str) -> bytes:
        """The body for a webhook with ``secret``: the payload plus its ``signature`` member."""
        signature = hmac_sha256_hex(secret, self._unsigned)
        return b"".join((self.prefix, b',"signature":"', signature.encode(), b'"}'))


def signature_headers(
    body: bytes, event_id: str, timestamp: int, secrets: Sequence[str]
) -> dict[str, str]:
    """The signature headers of one HTTP request.

    ``secrets`` is ``(current,)`` or, during a rotation's grace period,
    ``(current, previous)``. ``webhook-signature`` lists one ``v1,`` signature
    per secret, current first, so receivers holding either secret verify.
    """
    if not 1 <= len(secrets) <= 2:
        raise ValueError("signature_headers takes the current secret and at most one previous")
    # Written out for the usual single secret: this runs for every delivery.
    signed = _signed_prefix(event_id, timestamp) + body
    headers = {
        "X-Webhook-Signature": hmac_sha256_hex(secrets[0], body),
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": _v1(standard_webhooks_key(secrets[0]), signed),
    }
    if len(secrets) == 2:
        headers["X-Webhook-Signature-Previous"] = hmac_sha256_hex(secrets[1], body)
        headers["webhook-signature"] += " " + _v1(standard_webhooks_key(secrets[1]), signed)
    return headers
