"""events keep the trace context they were ingested in

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 10:00:00

``events.trace_context``: the W3C ``traceparent`` of the ingest span (optional
OpenTelemetry tracing, observability.tracing), so that every delivery attempt, in any
worker process and however much later, links to it. NULL when tracing is off. Adding a
nullable column without a default rewrites nothing on either database.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("trace_context", sa.Text(), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite drops a column by copying the table.
    with op.batch_alter_table("events") as batch:
        batch.drop_column("trace_context")
