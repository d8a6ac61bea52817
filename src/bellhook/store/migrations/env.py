"""Alembic environment: bellhook always hands Alembic an open connection."""

from __future__ import annotations

from alembic import context

from bellhook.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `bellhook migrate` (it supplies the connection)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
