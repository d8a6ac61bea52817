"""Tracing off costs no import of OpenTelemetry; on without it installed fails clearly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from bellhook.errors import ConfigurationError
from bellhook.observability import tracing
from bellhook.observability.tracing import Tracing, _destination, from_environment

# The modules of the delivery path and ingest, with tracing off, as a worker runs them.
# (FastAPI imports part of opentelemetry-api on its own, so the API app is left out.)
OFF = textwrap.dedent(
    """
    import asyncio, sys
    from bellhook.observability.tracing import from_environment
    import bellhook.runtime, bellhook.delivery.dispatcher, bellhook.delivery.manual
    import bellhook.ingest.consumer
    t = from_environment()
    assert t.on is False
    with t.ingest("http", ()) as span:
        assert span.traceparent is None
    asyncio.run(t.close())
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    print(",".join(loaded))
    """
)


def test_off_imports_nothing_of_opentelemetry() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", OFF], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_off_unless_the_endpoint_is_set() -> None:
    assert from_environment({}).on is False
    assert from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}).on is False
    assert from_environment({"OTEL_SERVICE_NAME": "x"}).on is False
    assert isinstance(from_environment({}), Tracing)


def test_on_without_the_otel_extra_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules: the import fails as if the package were not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigurationError, match=r"bellhook\[otel\]"):
        tracing.from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://hooks.slack.com/services/T0/B0/XXXXsecret?token=abc#f",
            {"url.scheme": "https", "server.address": "hooks.slack.com", "server.port": 443},
        ),
        (
            "https://user:pw@example.com:8443/h",
            {"url.scheme": "https", "server.address": "example.com", "server.port": 8443},
        ),
        (
            "http://[::1]:9000/x?y=1",
            {"url.scheme": "http", "server.address": "::1", "server.port": 9000},
        ),
    ],
)
def test_a_span_shows_where_a_delivery_went_but_no_path_or_credentials(
    url: str, shown: dict[str, object]
) -> None:
    assert _destination(url) == shown
