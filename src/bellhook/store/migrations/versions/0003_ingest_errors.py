"""the dead-letter table of the Kafka consumer

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 07:00:00

``ingest_errors`` holds each message the consumer refused (not JSON, not UTF-8, an
unknown event type, invalid data, too large), one row per topic, partition and offset.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_errors",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("excerpt", sa.Text(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("topic", "partition", "offset", name="uq_ingest_errors_position"),
    )
    op.create_index("ix_ingest_errors_created", "ingest_errors", ["created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ingest_errors_created", table_name="ingest_errors")
    op.drop_table("ingest_errors")
