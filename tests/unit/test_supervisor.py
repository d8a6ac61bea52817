"""How ``bellhook worker --processes N`` splits its limits between its processes."""

from __future__ import annotations

from bellhook.config import Settings
from bellhook.supervisor import child_environment, share_of


def test_each_process_gets_its_share_rounded_up_and_never_zero() -> None:
    assert share_of(16, 2) == 8
    assert share_of(512, 3) == 171
    assert share_of(1, 4) == 1
    assert share_of(5, 1) == 5


def test_children_inherit_the_settings_and_take_their_share() -> None:
    settings = Settings(
        database_url="sqlite:////tmp/x.db",
        dev_mode=True,
        worker_processes=4,
        max_concurrency=100,
        per_webhook_concurrency=10,
        log_level="warning",
    )
    env = child_environment(settings, 4, {"PATH": "/bin", "BELLHOOK_RETRY_SCHEDULE": "1,2"})
    assert env["PATH"] == "/bin"
    assert env["BELLHOOK_RETRY_SCHEDULE"] == "1,2"  # the rest of the configuration
    assert env["BELLHOOK_DATABASE_URL"] == "sqlite:////tmp/x.db"
    assert env["BELLHOOK_DEV_MODE"] == "true"
    assert env["BELLHOOK_LOG_LEVEL"] == "warning"
    assert env["BELLHOOK_WORKER_PROCESSES"] == "1"  # a child never forks further
    assert env["BELLHOOK_MAX_CONCURRENCY"] == "25"
    assert env["BELLHOOK_PER_WEBHOOK_CONCURRENCY"] == "3"
