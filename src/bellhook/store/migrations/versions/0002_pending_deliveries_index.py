"""the claim's index holds pending deliveries only

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 19:20:00

``ix_deliveries_due`` (webhook, status, due time) held every delivery ever made: each
one that ended moved within it (a delete and an insert), and the finished ones filled
it. ``ix_deliveries_pending`` (webhook, due time) holds the pending ones only: an ended
delivery leaves it. The claim's statement names the status literally, so that both
databases use the partial index (see store.deliveries).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PENDING_ONLY = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_pending",
        "deliveries",
        ["webhook_id", "next_attempt_at"],
        unique=False,
        sqlite_where=PENDING_ONLY,
        postgresql_where=PENDING_ONLY,
    )
    op.drop_index("ix_deliveries_due", table_name="deliveries")


def downgrade() -> None:
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["webhook_id", "status", "next_attempt_at"],
        unique=False,
    )
    op.drop_index("ix_deliveries_pending", table_name="deliveries")
