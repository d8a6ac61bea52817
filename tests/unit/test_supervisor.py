"""How ``bellhook worker --processes N`` splits its limits between its processes."""

from __future__ import annotations

import pytest

from bellhook.config import Settings
from bellhook.errors import ConfigurationError
from bellhook.supervisor import child_environments, shares_of


def test_the_shares_add_up_to_the_limit_and_none_is_zero() -> None:
    assert shares_of(16, 2) == [8, 8]
    assert shares_of(512, 3) == [171, 171, 170]
    assert shares_of(5, 1) == [5]
    assert shares_of(4, 4) == [1, 1, 1, 1]


def test_a_limit_smaller_than_the_processes_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="cannot be split between 4 worker processes"):
        shares_of(1, 4)


def test_children_inherit_the_settings_and_take_their_share() -> None:
    settings = Settings(
        database_url="sqlite:////tmp/x.db",
        dev_mode=True,
        worker_processes=4,
        max_concurrency=100,
        per_webhook_concurrency=10,
        log_level="warning",
    )
    envs = child_environments(settings, 4, {"PATH": "/bin", "BELLHOOK_RETRY_SCHEDULE": "1,2"})
    assert len(envs) == 4
    for env in envs:
        assert env["PATH"] == "/bin"
        assert env["BELLHOOK_RETRY_SCHEDULE"] == "1,2"  # the rest of the configuration
        assert env["BELLHOOK_DATABASE_URL"] == "sqlite:////tmp/x.db"
        assert env["BELLHOOK_DEV_MODE"] == "true"
        assert env["BELLHOOK_LOG_LEVEL"] == "warning"
        assert env["BELLHOOK_WORKER_PROCESSES"] == "1"  # a child never forks further
    assert [e["BELLHOOK_MAX_CONCURRENCY"] for e in envs] == ["25"] * 4
    assert [e["BELLHOOK_PER_WEBHOOK_CONCURRENCY"] for e in envs] == ["3", "3", "2", "2"]
