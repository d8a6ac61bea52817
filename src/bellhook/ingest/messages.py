"""Kafka messages into events: the two formats, the id of a message without one, and
why a message is refused. Pure: no client, no database.

A message's value is either the JSON body of ``POST /api/events`` (``event``, ``data``,
``id``, ``timestamp``, ``audience``) or a CloudEvents 1.0 event in structured JSON mode
(``specversion``, ``type``, ``id``, ``source``, ``time``, ``data`` and an ``audience``
extension attribute). Both then meet the API's own rules (``ingest.intake``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bellhook.ingest.intake import Refusal, accept_item
from bellhook.store.events import NewEvent

MAX_MESSAGE_BYTES = 1024 * 1024  # as POST /api/events' body limit
EXCERPT_BYTES = 1024
KEY_EXCERPT_BYTES = 255
MAX_ID_LENGTH = 255  # the API's event ids, and the events table's


@dataclass(frozen=True, slots=True)
class Message:
    """What the consumer reads of a Kafka message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def position_id(topic: str, partition: int, offset: int) -> str:
    """The id of an event whose message names none: its position in the log, so that
    reading the same message again (after a crash or a rebalance) is a duplicate."""
    plain = f"kafka:{topic}:{partition}:{offset}"
    if len(plain) <= MAX_ID_LENGTH:
        return plain
    # Topic names go up to 249 characters.
    return "kafka:" + hashlib.sha256(plain.encode()).hexdigest()


def excerpt(raw: bytes | None, limit: int) -> str:
    """The first ``limit`` bytes of ``raw`` as text; bytes that are not UTF-8 are shown
    as ``\\x..`` escapes rather than lost, and so is NUL, which PostgreSQL's text cannot
    hold (a refused message would otherwise never be stored, and block its partition)."""
    if raw is None:
        return ""
    return raw[:limit].decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def decode(message: Message, *, now: datetime) -> NewEvent | Refusal:
    """The event ``message`` holds, or why it cannot be accepted."""
    value = message.value
    if value is None:
        return Refusal("empty_message", "the message has no value (a tombstone?)")
    if len(value) > MAX_MESSAGE_BYTES:
        return Refusal(
            "too_large",
            f"the message is {len(value):,} bytes; at most {MAX_MESSAGE_BYTES:,} are accepted",
            [{"limit": MAX_MESSAGE_BYTES}],
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Refusal("not_utf8", f"the message is not UTF-8 text (byte {exc.start} is not)")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        return Refusal("not_json", f"the message is not JSON: {str(exc)[:200]}")
    if not isinstance(body, dict):
        return Refusal("not_an_object", "the message must be a JSON object")
    if "specversion" in body:
        cloud = from_cloudevent(body)
        if isinstance(cloud, Refusal):
            return cloud
        body = cloud
    key = position_id(message.topic, message.partition, message.offset)
    return accept_item(body, idempotency_key=key, now=now)


def from_cloudevent(body: dict[str, Any]) -> dict[str, Any] | Refusal:
    """A CloudEvents 1.0 structured-mode event as a ``POST /api/events`` body."""
    if body.get("specversion") != "1.0":
        return Refusal(
            "unsupported_cloudevent",
            f"CloudEvents specversion {body.get('specversion')!r} is not supported; use '1.0'",
            [{"field": "specversion"}],
        )
    missing = [name for name in ("id", "source", "type") if not body.get(name)]
    if missing:
        return Refusal(
            "validation_error",
            "a CloudEvent needs " + ", ".join(missing),
            [{"field": name, "message": "required"} for name in missing],
        )
    content_type = body.get("datacontenttype", "application/json")
    if not isinstance(content_type, str) or not (
        content_type.startswith("application/json") or "+json" in content_type
    ):
        return Refusal(
            "unsupported_cloudevent",
            f"datacontenttype {content_type!r} is not JSON",
            [{"field": "datacontenttype"}],
        )
    if "data_base64" in body:
        return Refusal(
            "unsupported_cloudevent",
            "data_base64 is not supported: send data as a JSON object",
            [{"field": "data_base64"}],
        )
    # Other attributes (source, subject, extensions) are the producer's; the event keeps
    # what a delivery carries.
    event: dict[str, Any] = {"event": body["type"], "id": body["id"], "data": body.get("data")}
    if "time" in body:
        event["timestamp"] = body["time"]
    if "audience" in body:
        event["audience"] = body["audience"]
    return event
