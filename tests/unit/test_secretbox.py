"""SecretBox: webhook secrets sealed with Fernet, rotation with MultiFernet."""

from __future__ import annotations

import pytest
import structlog
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from bellhook.errors import ConfigurationError
from bellhook.store.secretbox import PREFIX, OpenedSecrets, SecretBox, SecretUnreadable

SECRET = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXg="


def new_key() -> str:
    return Fernet.generate_key().decode()


KEY = new_key()


def test_seal_encrypts_with_a_recognizable_prefix_and_open_reverses_it() -> None:
    box = SecretBox((new_key(),))
    sealed = box.seal(SECRET)
    assert sealed.startswith(PREFIX)
    assert SECRET not in sealed
    assert box.open(sealed) == SECRET
    # Fernet is randomized: the same secret never seals to the same value twice.
    assert box.seal(SECRET) != sealed
    assert box.encrypts


@given(st.text(min_size=1, max_size=300))
def test_round_trip_of_any_text(secret: str) -> None:
    box = SecretBox((KEY,))
    assert box.open(box.seal(secret)) == secret


def test_plain_legacy_values_are_read_as_they_are() -> None:
    assert SecretBox((new_key(),)).open(SECRET) == SECRET
    assert SecretBox().open(SECRET) == SECRET
    assert SecretBox().open_optional(None) is None


def test_without_a_key_secrets_are_stored_as_they_are() -> None:
    box = SecretBox()
    assert not box.encrypts
    assert box.seal(SECRET) == SECRET
    assert box.is_current(SECRET)


def test_an_encrypted_secret_without_a_key_is_a_clear_error() -> None:
    sealed = SecretBox((new_key(),)).seal(SECRET)
    with pytest.raises(SecretUnreadable) as caught:
        SecretBox().open(sealed)
    assert isinstance(caught.value, ConfigurationError)
    assert "BELLHOOK_ENCRYPTION_KEY is not set" in caught.value.message
    assert caught.value.code == "secret_unreadable"


def test_the_wrong_key_is_a_clear_error_that_names_no_secret() -> None:
    right, wrong = new_key(), new_key()
    sealed = SecretBox((right,)).seal(SECRET)
    with pytest.raises(SecretUnreadable) as caught:
        SecretBox((wrong,)).open(sealed)
    message = caught.value.message
    assert "cannot be decrypted" in message
    assert "bellhook secrets reencrypt" in message
    for text in (SECRET, right, wrong, sealed):
        assert text not in message
        assert text not in str(caught.value)


def test_a_tampered_value_is_refused() -> None:
    box = SecretBox((new_key(),))
    sealed = box.seal(SECRET)
    body = sealed[len(PREFIX) :]
    flipped = body[:-5] + ("A" if body[-5] != "A" else "B") + body[-4:]
    with pytest.raises(SecretUnreadable):
        box.open(PREFIX + flipped)
    with pytest.raises(SecretUnreadable):
        box.open(PREFIX + "not-a-token")


def test_rotation_first_key_encrypts_all_keys_decrypt() -> None:
    old, new = new_key(), new_key()
    sealed_old = SecretBox((old,)).seal(SECRET)
    rotated = SecretBox((new, old))
    assert rotated.open(sealed_old) == SECRET
    assert not rotated.is_current(sealed_old)

    resealed = rotated.reseal(sealed_old)
    assert resealed != sealed_old
    assert rotated.is_current(resealed)
    # The new key alone opens what reseal wrote; the old key alone no longer does.
    assert SecretBox((new,)).open(resealed) == SECRET
    with pytest.raises(SecretUnreadable):
        SecretBox((old,)).open(resealed)
    # Sealing always uses the first key.
    assert SecretBox((new,)).open(rotated.seal("fresh-secret-0123")) == "fresh-secret-0123"


def test_reseal_is_idempotent_and_encrypts_plain_values() -> None:
    box = SecretBox((new_key(),))
    sealed = box.reseal(SECRET)
    assert sealed.startswith(PREFIX)
    assert box.open(sealed) == SECRET
    assert box.reseal(sealed) == sealed  # already current: untouched


def test_reseal_needs_a_key() -> None:
    with pytest.raises(ConfigurationError, match="BELLHOOK_ENCRYPTION_KEY is not set"):
        SecretBox().reseal(SECRET)


def test_from_setting() -> None:
    assert not SecretBox.from_setting(None).encrypts
    one, two = new_key(), new_key()
    box = SecretBox.from_setting(SecretStr(f" {one} , {two} "))
    assert SecretBox((two,)).open(SecretBox((two,)).seal("x" * 20)) == "x" * 20
    assert SecretBox((one,)).open(box.seal(SECRET)) == SECRET  # the first key encrypts
    assert box.open(SecretBox((two,)).seal(SECRET)) == SECRET  # the second decrypts


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("not-a-fernet-key", "key 1 of 1 is not a Fernet key"),
        ("{good},short", "key 2 of 2 is not a Fernet key"),
        ("{good},MDEyMzQ1Njc4OWFiY2RlZg==", "key 2 of 2 is not a Fernet key"),  # 16 bytes
        ("clé-avec-accent-clé-avec-accent-clé-avec-accent-12", "key 1 of 1 is not a Fernet key"),
        ("", "set but empty"),
        ("  ,  ", "set but empty"),
        ("{good},,{good}", "empty entry"),
    ],
    ids=["garbage", "second-short", "second-16-bytes", "non-ascii", "empty", "commas", "gap"],
)
def test_invalid_keys_are_a_configuration_error_that_never_echoes_the_key(
    value: str, expected: str
) -> None:
    good = new_key()
    value = value.replace("{good}", good)
    with pytest.raises(ConfigurationError) as caught:
        SecretBox.from_setting(SecretStr(value))
    message = caught.value.message
    assert expected in message
    for part in (p.strip() for p in value.split(",")):
        if len(part) >= 4:
            assert part not in message
    assert good not in message


def test_opened_secrets_decrypt_once_per_stored_form() -> None:
    box = SecretBox((KEY,))
    calls: list[str] = []
    real_open = box.open

    def counting_open(stored: str) -> str:
        calls.append(stored)
        return real_open(stored)

    box.open = counting_open  # type: ignore[method-assign]
    opened = OpenedSecrets(box)
    sealed = box.seal(SECRET)
    first = opened.of("wh_1", sealed, None, None)
    assert first is not None and first.current == SECRET
    assert opened.of("wh_1", sealed, None, None) is first
    assert calls == [sealed]
    # A rotation changes the stored form: the new secret is opened, never the stale one.
    rotated = box.seal(SECRET + "-new")
    second = opened.of("wh_1", rotated, sealed, None)
    assert second is not None
    assert (second.current, second.previous) == (SECRET + "-new", SECRET)


def test_opened_secrets_skip_an_unreadable_webhook_and_say_so_once() -> None:
    sealed_elsewhere = SecretBox((new_key(),)).seal(SECRET)
    opened = OpenedSecrets(SecretBox((KEY,)))
    with structlog.testing.capture_logs() as logs:
        assert opened.of("wh_x", sealed_elsewhere, None, None) is None
        assert opened.of("wh_x", sealed_elsewhere, None, None) is None
    assert [(r["event"], r["webhook_id"]) for r in logs] == [("delivery.secret_unreadable", "wh_x")]
    assert SECRET not in str(logs)
