"""Kafka messages into events (bellhook.ingest.messages), and the client's settings:
pure functions, no broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bellhook.config import Settings
from bellhook.errors import ConfigurationError
from bellhook.ingest.intake import Refusal
from bellhook.ingest.kafka import client_config, parse_options
from bellhook.ingest.messages import MAX_MESSAGE_BYTES, Message, decode, excerpt, position_id
from bellhook.store.events import NewEvent

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def message(value: bytes | dict[str, Any] | None, offset: int = 7) -> Message:
    raw = json.dumps(value).encode() if isinstance(value, dict) else value
    return Message("bellamy.events", 2, offset, b"k", raw)


def test_the_api_body_becomes_the_same_event_as_over_http() -> None:
    event = decode(
        message({"event": "post.created", "id": "p-1", "data": {"id": "p"}, "audience": ["a"]}),
        now=NOW,
    )
    assert event == NewEvent("p-1", "post.created", '{"id":"p"}', NOW, ("a",))


def test_an_event_without_an_id_is_named_by_its_position() -> None:
    first = decode(message({"event": "post.created", "data": {}}), now=NOW)
    again = decode(message({"event": "post.created", "data": {}}), now=NOW)
    assert isinstance(first, NewEvent) and isinstance(again, NewEvent)
    assert first.id == again.id == "kafka:bellamy.events:2:7"  # read twice: one id
    other = decode(message({"event": "post.created", "data": {}}, offset=8), now=NOW)
    assert isinstance(other, NewEvent) and other.id == "kafka:bellamy.events:2:8"


def test_a_position_id_stays_within_the_id_limit_for_the_longest_topics() -> None:
    long_topic = "t" * 249
    made = position_id(long_topic, 0, 10**12)
    assert len(made) <= 255 and made.startswith("kafka:")
    assert made == position_id(long_topic, 0, 10**12) != position_id(long_topic, 0, 10**12 + 1)


def test_a_cloudevent_becomes_an_event() -> None:
    event = decode(
        message(
            {
                "specversion": "1.0",
                "type": "comment.created",
                "id": "c-1",
                "source": "/backend",
                "time": "2026-12-07T10:00:00Z",
                "subject": "ignored",
                "audience": "*",
                "data": {"id": "c"},
            }
        ),
        now=NOW,
    )
    assert event == NewEvent(
        "c-1", "comment.created", '{"id":"c"}', datetime(2026, 12, 7, 10, tzinfo=UTC), ("*",)
    )


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "empty_message"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "too_large"),
        (b"\xc3\x28", "not_utf8"),
        (b"{", "not_json"),
        (b"[" * 100_000 + b"]" * 100_000, "not_json"),
        (b'"text"', "not_an_object"),
        ({"event": "post.nope", "data": {}}, "unknown_event_type"),
        ({"event": "post.created"}, "validation_error"),
        ({"event": "post.created", "data": {}, "extra": 1}, "validation_error"),
        ({"event": "post.created", "data": {"x": "y" * 300_000}}, "validation_error"),
        ({"specversion": "0.3", "type": "post.created", "id": "1", "source": "s"},
         "unsupported_cloudevent"),
        ({"specversion": "1.0", "type": "post.created", "source": "s", "data": {}},
         "validation_error"),
        ({"specversion": "1.0", "type": "post.created", "id": "1", "source": "s",
          "datacontenttype": "text/plain", "data": {}}, "unsupported_cloudevent"),
        ({"specversion": "1.0", "type": "post.created", "id": "1", "source": "s",
          "data_base64": "AA=="}, "unsupported_cloudevent"),
    ],
)  # fmt: skip
def test_a_message_that_cannot_be_an_event_is_refused_with_a_reason(
    value: bytes | dict[str, Any] | None, code: str
) -> None:
    refused = decode(message(value), now=NOW)
    assert isinstance(refused, Refusal)
    assert refused.code == code
    assert refused.message


def test_an_excerpt_is_bounded_and_shows_bytes_that_are_not_text() -> None:
    assert excerpt(b"\xffab" * 1000, 6) == "\\xffab\\xffab"
    assert excerpt(None, 10) == ""
    assert excerpt(b"a\x00b", 10) == "a\\x00b"  # PostgreSQL text holds no NUL


def test_the_client_gets_the_security_settings_and_the_extra_options() -> None:
    settings = Settings(
        kafka_bootstrap_servers="k1:9093,k2:9093",
        kafka_security_protocol="sasl_ssl",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="bellhook",
        kafka_sasl_password="s3cret",
        kafka_ssl_ca_location="/etc/ca.pem",
        kafka_options="session.timeout.ms=10000, fetch.min.bytes=1",
    )
    config = client_config(settings)
    assert config["bootstrap.servers"] == "k1:9093,k2:9093"
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("bellhook", "s3cret")
    assert config["ssl.ca.location"] == "/etc/ca.pem"
    assert config["session.timeout.ms"] == "10000" and config["fetch.min.bytes"] == "1"
    assert "ssl.key.location" not in config  # unset settings are left to the client
    assert "s3cret" not in repr(settings)  # the password is a secret in the settings


def test_options_that_are_not_name_value_pairs_are_refused_clearly() -> None:
    assert parse_options("") == {}
    with pytest.raises(ConfigurationError, match="'oops' is not name=value"):
        parse_options("a=1,oops")


@pytest.mark.parametrize(
    "option",
    ["enable.ssl.certificate.verification=false", "ssl.endpoint.identification.algorithm=none"],
)
def test_options_that_turn_off_the_brokers_certificate_check_are_refused(option: str) -> None:
    with pytest.raises(ConfigurationError, match="certificate check"):
        parse_options(f"session.timeout.ms=10000,{option}")
    assert parse_options("ssl.endpoint.identification.algorithm=https")  # the default, allowed
