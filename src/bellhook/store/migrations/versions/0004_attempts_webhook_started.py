"""attempts are indexed by webhook and start time

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 15:30:00

``ix_attempts_webhook_started`` (webhook, start time): a webhook's stats read its own
attempts of the last hour or day, rather than every webhook's attempts of that time; on
PostgreSQL it holds their latency, status and error kind too (index-only scans).
Created plainly, not CONCURRENTLY: migrations run in one transaction, under the
migrators' advisory lock (store.database), where PostgreSQL refuses CONCURRENTLY.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_attempts_webhook_started",
        "attempts",
        ["webhook_id", "started_at"],
        unique=False,
        postgresql_include=["latency_ms", "status_code", "error_kind"],
    )


def downgrade() -> None:
    op.drop_index("ix_attempts_webhook_started", table_name="attempts")
