"""Webhook signing secrets at rest: Fernet encryption with key rotation.

bellhook must read its webhook secrets back (it signs every delivery with
them), so they are encrypted rather than hashed. With ``BELLHOOK_ENCRYPTION_KEY``
set to one or more comma-separated Fernet keys, ``seal`` encrypts with the first
key and ``open`` decrypts with any of them (``MultiFernet``), so a new key can be
put first while the old ones still read what they wrote; ``bellhook secrets
reencrypt`` then moves every stored secret to the first key.

Stored values are ``fernet:<token>``; anything without the prefix is a plain
legacy value and is read as it is. Without a key, ``seal`` stores secrets as
they are.

Keys and secrets never appear in an error message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from bellhook.domain.models import WebhookSecrets
from bellhook.errors import ConfigurationError

log = structlog.get_logger("bellhook.store")
PREFIX: Final = "fernet:"
_KEY_HINT: Final = (
    "each key must be 32 url-safe base64-encoded bytes, as made by "
    "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
)


class SecretUnreadable(ConfigurationError):
    """A stored secret cannot be decrypted with the configured keys."""

    code = "secret_unreadable"


class SecretBox:
    """Seals secrets for the database and opens them again.

    ``keys`` are Fernet keys, newest first; none means secrets are stored
    unencrypted (and encrypted ones cannot be read).
    """

    def __init__(self, keys: tuple[str, ...] = ()) -> None:
        fernets: list[Fernet] = []
        for number, key in enumerate(keys, start=1):
            # Never echo the key: say which one, not what it is.
            problem = ConfigurationError(
                f"BELLHOOK_ENCRYPTION_KEY: key {number} of {len(keys)} is not a Fernet key; "
                + _KEY_HINT
            )
            if not key.isascii():
                raise problem
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except ValueError as exc:  # binascii.Error too; neither quotes the key
                raise problem from exc
        self._primary = fernets[0] if fernets else None
        self._all = MultiFernet(fernets) if fernets else None

    @classmethod
    def from_setting(cls, value: SecretStr | None) -> SecretBox:
        """The box for ``Settings.encryption_key`` (comma-separated keys, newest first)."""
        if value is None:
            return cls()
        keys = tuple(part.strip() for part in value.get_secret_value().split(","))
        if not any(keys):
            raise ConfigurationError(
                "BELLHOOK_ENCRYPTION_KEY is set but empty; unset it to store secrets "
                "unencrypted, or " + _KEY_HINT.replace("each key must be", "give a key of")
            )
        if not all(keys):
            raise ConfigurationError(
                "BELLHOOK_ENCRYPTION_KEY has an empty entry; separate keys with single commas"
            )
        return cls(keys)

    @property
    def encrypts(self) -> bool:
        """True when secrets are sealed with a key, False when stored as they are."""
        return self._primary is not None

    @staticmethod
    def is_sealed(stored: str) -> bool:
        return stored.startswith(PREFIX)

    def seal(self, secret: str) -> str:
        """The value to store for ``secret``: encrypted with the first key, if any."""
        if self._primary is None:
            return secret
        return PREFIX + self._primary.encrypt(secret.encode("utf-8")).decode("ascii")

    def open(self, stored: str) -> str:
        """The secret behind a stored value; plain legacy values come back unchanged."""
        if not self.is_sealed(stored):
            return stored
        if self._all is None:
            raise SecretUnreadable(
                "a webhook secret is stored encrypted, but BELLHOOK_ENCRYPTION_KEY is not set; "
                "set it to the key (or keys) the secrets were encrypted with"
            )
        try:
            return self._all.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise SecretUnreadable(
                "a stored webhook secret cannot be decrypted with BELLHOOK_ENCRYPTION_KEY; "
                "when rotating keys put the new key first and keep the old ones after it "
                "until `bellhook secrets reencrypt` has run"
            ) from exc

    def open_optional(self, stored: str | None) -> str | None:
        return None if stored is None else self.open(stored)

    def is_current(self, stored: str) -> bool:
        """True if ``stored`` is already what ``seal`` would store now (its key, its form)."""
        if self._primary is None:
            return not self.is_sealed(stored)
        if not self.is_sealed(stored):
            return False
        try:
            self._primary.decrypt(stored[len(PREFIX) :].encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True

    def reseal(self, stored: str) -> str:
        """``stored`` sealed with the first key (unchanged if it already is)."""
        if self._primary is None:
            raise ConfigurationError(
                "BELLHOOK_ENCRYPTION_KEY is not set: there is no key to re-encrypt with"
            )
        if self.is_current(stored):
            return stored
        return self.seal(self.open(stored))


_StoredSecrets = tuple[str, str | None, datetime | None]


class OpenedSecrets:
    """Webhooks' signing secrets, decrypted once and remembered by their stored form.

    Delivery needs the plain secrets of every webhook it sends to, thousands of times a
    second; Fernet decryption each time would cost more than the rest of the claim.
    A rotation or re-encryption changes the stored form, so a stale entry is never
    used. A webhook whose secrets cannot be decrypted is logged once and skipped.
    """

    def __init__(self, box: SecretBox, *, kept: int = 10_000) -> None:
        self.box = box
        self._kept = kept  # about 100 bytes an entry
        self._opened: dict[_StoredSecrets, WebhookSecrets] = {}
        self._unreadable: set[_StoredSecrets] = set()

    def of(
        self,
        webhook_id: str,
        stored: str,
        previous: str | None,
        previous_expires_at: datetime | None,
    ) -> WebhookSecrets | None:
        key = (stored, previous, previous_expires_at)
        opened = self._opened.get(key)
        if opened is not None:
            return opened
        if key in self._unreadable:
            return None
        if len(self._opened) >= self._kept:
            self._opened.clear()
        try:
            opened = WebhookSecrets(
                self.box.open(stored), self.box.open_optional(previous), previous_expires_at
            )
        except SecretUnreadable as exc:
            self._unreadable.add(key)
            log.error("delivery.secret_unreadable", webhook_id=webhook_id, error=exc.message)
            return None
        self._opened[key] = opened
        return opened
