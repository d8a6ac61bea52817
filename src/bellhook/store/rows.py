"""Row ↔ domain record conversion shared by the repositories."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Row

from bellhook.domain.models import (
    ApiKey,
    Attempt,
    Delivery,
    DeliveryStatus,
    ErrorKind,
    Webhook,
    WebhookStatus,
)


def to_api_key(row: Row[Any]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        owner_id=m["owner_id"],
        is_admin=bool(m["is_admin"]),
        name=m["name"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
    )


def to_webhook(row: Row[Any]) -> Webhook:
    m = row._mapping
    return Webhook(
        id=m["id"],
        owner_id=m["owner_id"],
        admin_owned=bool(m["admin_owned"]),
        url=m["url"],
        events=tuple(json.loads(m["events"])),
        description=m["description"],
        status=WebhookStatus(m["status"]),
        disabled_reason=m["disabled_reason"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def to_delivery(row: Row[Any]) -> Delivery:
    m = row._mapping
    return Delivery(
        id=m["id"],
        event_id=m["event_id"],
        webhook_id=m["webhook_id"],
        event_type=m["event_type"],
        status=DeliveryStatus(m["status"]),
        attempt_count=m["attempt_count"],
        next_attempt_at=m["next_attempt_at"],
        last_status_code=m["last_status_code"],
        last_error_kind=ErrorKind(m["last_error_kind"]) if m["last_error_kind"] else None,
        is_test=bool(m["is_test"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def to_attempt(row: Row[Any]) -> Attempt:
    m = row._mapping
    return Attempt(
        id=m["id"],
        delivery_id=m["delivery_id"],
        number=m["number"],
        manual=bool(m["manual"]),
        started_at=m["started_at"],
        status_code=m["status_code"],
        latency_ms=m["latency_ms"],
        error_kind=ErrorKind(m["error_kind"]) if m["error_kind"] else None,
        error_message=m["error_message"],
        response_excerpt=m["response_excerpt"],
    )
