"""The operator's files agree with each other and with docs/operations.md: the alert rules
pass ``promtool check rules`` and their unit tests, the dashboard's queries parse, and every
expression in either names only metrics that the page's metrics table documents.

promtool comes from Debian's ``prometheus`` package (``.ci/run`` installs it). Without it
these tests skip locally and fail when ``CI`` or ``REQUIRE_TEST_TOOLS`` (``.ci/run``) is
set, so that CI cannot pass by skipping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "bellhook.json"

STANDARD = {"up"}  # Prometheus's own series
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
TABLE_ROW = re.compile(r"^\|\s*`(bellhook_[a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|", re.MULTILINE)

FUNCTIONS = {
    *("sum", "min", "max", "avg", "count", "group", "stddev", "topk", "bottomk", "quantile"),
    *("rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "resets"),
    *("changes", "histogram_quantile", "vector", "scalar", "abs", "clamp_min", "clamp_max"),
    *("absent", "absent_over_time", "avg_over_time", "max_over_time", "min_over_time"),
    *("sum_over_time", "count_over_time", "last_over_time", "label_replace", "time"),
}
KEYWORDS = {"and", "or", "unless", "bool", "inf", "nan"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (Grafana variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, function arguments
    text = re.sub(r"\$\{?\w+\}?", "", text)  # $__rate_interval, ${DS_PROMETHEUS}
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\boffset\s+\w+", "", text)
    text = GROUPING.sub("", text)
    text = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:e[+-]?\d+)?", "", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group(0)
        if name.lower() in KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            assert name in FUNCTIONS, f"unknown PromQL function {name!r} in {expr!r}"
        else:
            names.add(name)
    return names


def documented_metrics() -> dict[str, str]:
    """Name to type, from docs/operations.md's metrics table."""
    rows = TABLE_ROW.findall(OPERATIONS.read_text(encoding="utf-8"))
    assert rows, "docs/operations.md has no metrics table (| `bellhook_...` | type | ...)"
    return dict(rows)


def allowed_names() -> set[str]:
    allowed = set(STANDARD)
    for name, kind in documented_metrics().items():
        allowed.add(name)
        if kind == "histogram":
            allowed.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return allowed


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))  # collapsed rows


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        target["expr"]
        for panel in dashboard_panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not on PATH (Debian: apt-get install prometheus; .ci/run does)"
        if os.environ.get("CI") or os.environ.get("REQUIRE_TEST_TOOLS"):
            pytest.fail(f"{message}: CI must run these tests, not skip them", pytrace=False)
        pytest.skip(message)
    return found


def run(promtool: str, *args: str) -> None:
    done = subprocess.run(
        [promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_the_alert_rules_pass_promtool_check(promtool: str) -> None:
    run(promtool, "check", "rules", str(ALERTS.relative_to(ROOT)))


def test_the_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    run(promtool, "test", "rules", str(ALERTS_TEST.relative_to(ROOT)))


def test_every_alert_is_tested_firing() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in alert_rules()} <= firing


def test_the_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # Grafana's interval variables become durations; promtool then parses each query.
    rules = [
        {"record": f"dashboard:query_{number}", "expr": re.sub(r"\$__\w+", "5m", expr)}
        for number, expr in enumerate(dashboard_expressions())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run(promtool, "check", "rules", str(path))


def test_every_alert_has_a_severity_summary_and_description() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def exposed_metrics() -> dict[str, str]:
    """Every bellhook metric the code can expose, by its exposition name, with its type."""
    from prometheus_client import CollectorRegistry

    from bellhook.observability.exposition import DatabaseGauges
    from bellhook.observability.metrics import Metrics

    registry = CollectorRegistry()
    DatabaseGauges(Metrics(registry).registry)
    found = {}
    for family in registry.collect():
        if family.name.startswith("bellhook_"):
            suffix = "_total" if family.type == "counter" else ""
            found[family.name + suffix] = family.type
    return found


def test_the_page_documents_exactly_the_metrics_the_code_exposes() -> None:
    documented = documented_metrics()
    exposed = exposed_metrics()
    assert documented == exposed, (
        f"only in docs/operations.md: {sorted(set(documented) - set(exposed))}; "
        f"only in the code: {sorted(set(exposed) - set(documented))}; or types differ"
    )


@pytest.mark.parametrize(
    ("source", "expressions"),
    [
        ("deploy/prometheus/alerts.yml", [rule["expr"] for rule in alert_rules()]),
        ("deploy/grafana/bellhook.json", dashboard_expressions()),
    ],
)
def test_every_expression_names_only_documented_metrics(
    source: str, expressions: list[str]
) -> None:
    assert expressions, f"{source} has no expressions"
    allowed = allowed_names()
    unknown = {f"{name} (in {expr!r})" for expr in expressions for name in metric_names(expr)}
    unknown = {entry for entry in unknown if entry.split(" ")[0] not in allowed}
    assert not unknown, f"{source} names metrics docs/operations.md does not list:\n" + "\n".join(
        sorted(unknown)
    )


def test_every_documented_metric_is_on_the_dashboard() -> None:
    shown = {name for expr in dashboard_expressions() for name in metric_names(expr)}
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in shown}
    assert set(documented_metrics()) <= shown, set(documented_metrics()) - shown


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(bellhook_x_bucket{a="b"}[5m]))', {"bellhook_x_bucket"}),
        ("histogram_quantile(0.99, sum(rate(m[$__rate_interval])) by (le))", {"m"}),
        ('a / on (job) group_left (version) b{c=~"d.*"} > 1e3 and up == 0', {"a", "b", "up"}),
        ("deriv(sum by (topic) (lag)[15m:1m]) > 0 or vector(0)", {"lag"}),
        ("rate(m_total[5m] offset 1h)", {"m_total"}),
    ],
)
def test_metric_names_reads_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
