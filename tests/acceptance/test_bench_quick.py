"""`make bench-quick` end to end (the smoke run): every scenario runs, the table
and the results are written, and every delivery of the drains arrived once, signed.
No timing is asserted. It runs in the SQLite pass only: the bench makes its own SQLite
files, so the PostgreSQL pass would run the same thing again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.run import SCENARIOS

from tests.conftest import TEST_DATABASE_URL
from tests.support import bellhook_env

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "quick"

pytestmark = pytest.mark.skipif(
    bool(TEST_DATABASE_URL), reason="the SQLite pass runs it; nothing here uses PostgreSQL"
)


def test_bench_quick_runs_every_scenario_and_every_delivery_arrives_once() -> None:
    # bellhook_env: no BELLHOOK_* variable, so no PostgreSQL rows and no launcher.
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick"],
        cwd=ROOT,
        env=bellhook_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,  # the exit status is asserted below, with the output
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| Scenario | Measured | Target |" in done.stdout  # the table is printed
    # serve's load in the steady scenarios is measured, and reported in the table.
    serve_row = "| 4-5. (reference) serve's CPU during scenario 4 / 5 / the 5 healthy alone,"
    assert serve_row in done.stdout
    for steady in ("latency", "isolation"):
        cores = json.loads((RESULTS / f"{steady}.json").read_text())["serve_cores"]
        assert 0 < cores <= (os.cpu_count() or 1), (steady, cores)  # no more than the machine
    # An event's first and last healthy arrival in scenario 5 (five healthy webhooks).
    assert "| 5. (reference) an event's first / last healthy arrival," in done.stdout
    isolation = json.loads((RESULTS / "isolation.json").read_text())
    fan = isolation["fan_out_ms"]
    # Every measured event once, with its five healthy (event, webhook) pairs.
    assert fan["first"]["n"] * 5 == isolation["measured_pairs"] + isolation["missing"], fan
    assert 0 < fan["first"]["p50"] <= fan["last"]["p50"], fan
    # Isolation is judged against the same five webhooks without the hanging ones, which
    # the quick run measures too: every one of their events arrived at all five.
    assert "| 5. Isolation, 5 healthy + 5 hanging webhooks:" in done.stdout
    alone = isolation["without_hanging"]["from_send_ms"]
    assert alone["n"] > 0 and alone["never_arrived"] == 0, alone
    assert "| 5. (reference) fan-out cost:" in done.stdout
    summary = json.loads((RESULTS / "summary.json").read_text())
    assert summary["quick"] is True
    assert summary["failed"] == []
    assert {name for name in SCENARIOS if name != "postgres"} <= {
        p.stem for p in RESULTS.glob("*.json")
    }
    # Scenario 7's Kafka rows: every produced event was stored by `bellhook consume`.
    kafka = json.loads((RESULTS / "ingest.json").read_text())["kafka"]
    assert kafka["produced"]["produced"] == kafka["stored"] == kafka["events"], kafka
    assert kafka["bare"]["messages"] == kafka["events"], kafka
    assert "| 7. Ingest, Kafka topic" in done.stdout
    throughput = json.loads((RESULTS / "throughput.json").read_text())
    for workload in ("single", "fanout"):
        run = throughput[workload]
        assert run["duplicates"] == 0, workload
        assert run["receiver"]["bad_signatures"] == 0, workload
        assert run["receiver"]["unique_deliveries"] == run["deliveries"], workload
        assert run["db_after"] == {"succeeded": run["deliveries"]}, workload
        # The ceiling's bare client, in one process and split in two: every request
        # arrived, signed as bellhook signs.
        for ceiling in ("ceiling_asyncio", "ceiling_uvloop_2p"):
            bare = run[ceiling]
            assert bare["errors"] == 0, (workload, ceiling)
            assert bare["bad_signatures"] == 0, (workload, ceiling)
            assert bare["received"] == bare["requests"] == run["deliveries"], (workload, ceiling)
