"""Alembic, driven programmatically on a connection bellhook already holds."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_connection(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


@functools.cache
def _revisions() -> tuple[str | None, frozenset[str]]:
    """This version's newest revision and all it knows (the scripts, read once)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    known = frozenset(script.revision for script in scripts.walk_revisions())
    return scripts.get_current_head(), known


def schema_state(connection: Connection) -> str:
    """``ok`` when the database's schema is this version's newest revision (or a newer
    version's: migrations only add, so that a rolling upgrade's old processes keep
    running on it); otherwise what is missing."""
    from alembic.migration import MigrationContext

    head, known = _revisions()
    current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return "ok"
    if current is None:
        return f"the database has no schema: run `bellhook migrate` (to {head})"
    if current not in known:
        return "ok"  # a newer version's revision
    return f"the database is at revision {current}, this version needs {head}: run bellhook migrate"
