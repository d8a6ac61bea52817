"""API keys and webhook secrets: generation, hashing, constant-time checks."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

from bellhook.domain.ids import new_id
from bellhook.errors import AuthenticationFailed, InvalidInput

KEY_PREFIX = "bhk"
SECRET_MIN, SECRET_MAX = 16, 256


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key_id: str
    token: str  # shown once, never stored
    key_hash: str


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def issue_key() -> IssuedKey:
    key_id = new_id("key")
    token = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return IssuedKey(key_id=key_id, token=token, key_hash=hash_token(token))


def key_id_of(token: str) -> str:
    """The key id embedded in a token (``bhk_<key id>_<random>``), or 401 if malformed."""
    parts = token.split("_")
    if len(parts) < 4 or parts[0] != KEY_PREFIX or parts[1] != "key" or not parts[2]:
        raise AuthenticationFailed("the API key is malformed")
    return f"key_{parts[2]}"


def generate_webhook_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes, the Standard Webhooks form."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_webhook_secret(secret: str) -> str:
    if not SECRET_MIN <= len(secret) <= SECRET_MAX:
        raise InvalidInput(
            f"secret must be {SECRET_MIN} to {SECRET_MAX} characters long",
            details=[{"field": "secret", "min": SECRET_MIN, "max": SECRET_MAX}],
        )
    if not secret.isprintable() or secret != secret.strip():
        raise InvalidInput(
            "secret must be printable characters without leading or trailing spaces",
            details=[{"field": "secret"}],
        )
    return secret
