"""The schema, as SQLAlchemy Core tables. Alembic migrations create it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator


def aware(value: datetime) -> datetime:
    """``value``, refused if naive: the store never guesses a time zone."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    return value


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes everywhere; SQLite stores them naive, PostgreSQL as timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = aware(value).astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()
PENDING_ONLY = text("status = 'pending'")  # the claim's partial index (store.deliveries)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner_id", String(255), nullable=False, index=True),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("name", String(255)),
    Column("key_hash", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("last_used_at", UTCDateTime),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner_id", String(255), nullable=False),
    Column("admin_owned", Boolean, nullable=False, default=False),
    Column("url", Text, nullable=False),
    Column("events", Text, nullable=False),  # JSON list of names
    Column("description", Text),
    Column("status", String(16), nullable=False),
    Column("disabled_reason", Text),
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text),
    Column("previous_secret_expires_at", UTCDateTime),
    Column("failing_since", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_webhooks_owner_created", "owner_id", "created_at", "id"),
    Index("ix_webhooks_created", "created_at", "id"),
)

events = Table(
    "events",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("data", Text, nullable=False),  # JSON exactly as delivered (JS-compatible bytes)
    Column("timestamp", UTCDateTime, nullable=False),
    Column("audience", Text),  # JSON list, '"*"', or NULL (admin webhooks only)
    Column("created_at", UTCDateTime, nullable=False),
    # The W3C traceparent of the ingest span, for the deliveries' spans to link to
    # (observability.tracing); NULL when tracing is off.
    Column("trace_context", Text),
    Index("ix_events_created", "created_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("event_id", String(255), nullable=False),
    Column("webhook_id", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt_count", Integer, nullable=False, default=0),  # all attempts, manual too
    Column("schedule_step", Integer, nullable=False, default=0),  # scheduled failures so far
    # When the dispatcher may next try it. Claiming pushes it past the delivery
    # timeout (a lease): if the worker dies, the delivery simply becomes due again.
    Column("next_attempt_at", UTCDateTime),
    Column("last_status_code", Integer),
    Column("last_error_kind", String(32)),
    Column("is_test", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # What the claim seeks: the pending ones only (see store.deliveries). A delivery
    # leaves it when it ends, rather than moving to another place in it.
    Index(
        "ix_deliveries_pending",
        "webhook_id",
        "next_attempt_at",
        sqlite_where=PENDING_ONLY,
        postgresql_where=PENDING_ONLY,
    ),
    Index("ix_deliveries_webhook_created", "webhook_id", "created_at", "id"),
    Index("ix_deliveries_event", "event_id"),
    Index("ix_deliveries_updated", "updated_at"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("delivery_id", String(64), nullable=False),
    Column("webhook_id", String(64), nullable=False),
    Column("number", Integer, nullable=False),
    Column("manual", Boolean, nullable=False, default=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Float, nullable=False),
    Column("error_kind", String(32)),
    Column("error_message", Text),
    Column("response_excerpt", Text),
    Index("ix_attempts_delivery", "delivery_id", "started_at"),
    Index("ix_attempts_started", "started_at"),
    # A webhook's recent attempts (store.stats), without reading every webhook's.
    # A webhook's stats (store.stats); on PostgreSQL, read from the index alone.
    Index(
        "ix_attempts_webhook_started",
        "webhook_id",
        "started_at",
        postgresql_include=["latency_ms", "status_code", "error_kind"],
    ),
)

# Messages the Kafka consumer could not accept (a dead-letter table): kept so that an
# operator sees them and the partition moves on. One row per message position.
ingest_errors = Table(
    "ingest_errors",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("key", Text),  # an excerpt of the message key
    Column("excerpt", Text, nullable=False),  # the first bytes of the value
    Column("code", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("topic", "partition", "offset", name="uq_ingest_errors_position"),
    Index("ix_ingest_errors_created", "created_at", "id"),
)
