"""/readyz's schema check on a real database: behind this version's migrations is not
ready (and says what to run); this version's, or a newer version's, is."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection

from bellhook.config import Settings
from bellhook.observability.readiness import readiness
from bellhook.runtime import open_runtime
from bellhook.store.migrate import alembic_config


async def test_a_schema_behind_this_version_is_not_ready_until_migrated(
    make_settings: Callable[..., Settings],
) -> None:
    async with open_runtime(make_settings()) as rt:
        assert (await readiness(rt)).ready

        def downgrade(connection: Connection) -> None:
            command.downgrade(alembic_config(connection), "0003")

        async with rt.db.write() as conn:
            await conn.run_sync(downgrade)
        state = await readiness(rt)
        assert not state.ready
        assert state.checks["database"] == "ok"
        assert state.checks["migrations"].startswith("the database is at revision 0003")
        assert "bellhook migrate" in state.checks["migrations"]
        assert state.reasons == [f"migrations: {state.checks['migrations']}"]

        await rt.db.migrate()
        assert (await readiness(rt)).checks["migrations"] == "ok"

        # A newer version's revision (a rolling upgrade's old process): still ready.
        async with rt.db.write() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        assert (await readiness(rt)).ready


async def test_components_say_why_they_are_not_ready(
    make_settings: Callable[..., Settings],
) -> None:
    async with open_runtime(make_settings()) as rt:
        checks = (await readiness(rt)).checks
        assert checks["dispatcher"] == checks["kafka"] == "not_configured"
        rt.components["kafka"] = lambda: "joining consumer group 'bellhook'"
        state = await readiness(rt)
        assert not state.ready
        assert state.reasons == ["kafka: joining consumer group 'bellhook'"]
