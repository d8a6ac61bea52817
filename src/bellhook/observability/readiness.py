"""/readyz: whether this process can do its work now, and if not, why.

``/healthz`` says the process is up and its database reachable; readiness adds what a
load balancer or an orchestrator needs before sending traffic or counting a rollout
done: the schema is this version's, and what the process runs (the dispatcher, the
Kafka consumer) is running.
"""

from __future__ import annotations

from dataclasses import dataclass

from bellhook.errors import StorageUnavailable
from bellhook.runtime import Runtime

OK = "ok"
NOT_CONFIGURED = "not_configured"
COMPONENTS = ("dispatcher", "kafka")


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]  # name: "ok", "not_configured" or why not

    @property
    def ready(self) -> bool:
        return all(state in (OK, NOT_CONFIGURED) for state in self.checks.values())

    @property
    def reasons(self) -> list[str]:
        return [
            f"{name}: {state}"
            for name, state in self.checks.items()
            if state not in (OK, NOT_CONFIGURED)
        ]


async def readiness(rt: Runtime) -> Readiness:
    checks: dict[str, str] = {}
    if await rt.db.ping():
        checks["database"] = OK
        try:
            checks["migrations"] = await rt.db.schema_state()
        except StorageUnavailable:
            checks["migrations"] = "unknown: the database stopped answering"
    else:
        checks["database"] = "the database cannot be reached"
        checks["migrations"] = "unknown: the database cannot be reached"
    for name in COMPONENTS:
        state = rt.components.get(name)
        checks[name] = state() if state is not None else NOT_CONFIGURED
    return Readiness(checks)
