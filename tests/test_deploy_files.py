"""The dashboard and the alert rules name only metrics (and labels) the service exports.

promtool is not available here, so each PromQL expression is checked by a small parser: its
brackets balance, every ``triggers_*`` series it reads is a sample name of the service's
registry (``_bucket``, ``_count``, ``_total`` ... included), and every label it matches or
groups by is one of that metric's labels (``le`` for histograms)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from service import metrics

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "triggers.json"
SERIES = re.compile(r"\b(triggers_[a-z0-9_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
PAIRS = {")": "(", "]": "[", "}": "{"}
WANTED_ALERTS = {"TriggersNoWorkerAlive", "TriggersOutboxBacklogGrowing",
                 "TriggersScheduleToStartSlow", "TriggersWebhookFailures",
                 "TriggersRedisMemoryNearMax", "TriggersSweeperRedispatching"}  # fmt: skip


def exported() -> dict[str, set[str]]:
    """Every sample name the service's metrics can produce, with its labels."""
    found: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name, labels = metric._name, set(metric._labelnames)
        if metric._type == "counter":
            found[name + "_total"] = labels
        elif metric._type == "histogram":
            found.update({name + "_bucket": labels | {"le"}, name + "_count": labels,
                          name + "_sum": labels})  # fmt: skip
        elif metric._type == "info":
            found[name + "_info"] = {"version"}
        else:
            found[name] = labels
    return found


def balanced(expr: str) -> bool:
    stack: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in PAIRS and (not stack or stack.pop() != PAIRS[char]):
            return False
    return not stack


def check(expr: str, names: dict[str, set[str]]) -> None:
    assert balanced(expr), f"unbalanced: {expr}"
    series = SERIES.findall(expr)
    assert series, f"reads no triggers_ metric: {expr}"
    labels_of_expr: set[str] = set()
    for name, matchers in series:
        assert name in names, f"{name} is not exported (in {expr})"
        for label, _ in MATCHER.findall(matchers or ""):
            assert label in names[name], f"{name} has no label {label!r} (in {expr})"
        labels_of_expr |= names[name]
    for group in GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            assert label in labels_of_expr, f"no metric of {expr} has the label {label!r}"


def alert_rules() -> list[dict[str, object]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_alert_rule_reads_exported_metrics(rule: dict[str, object]) -> None:
    assert set(rule) >= {"alert", "expr", "labels", "annotations"}
    check(str(rule["expr"]), exported())


def test_alerts_cover_what_operators_need() -> None:
    assert {str(rule["alert"]) for rule in alert_rules()} >= WANTED_ALERTS


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_dashboard_panel_reads_exported_metrics(expr: str) -> None:
    check(expr, exported())


def test_the_checker_catches_a_misspelt_metric_and_label() -> None:
    names = exported()
    with pytest.raises(AssertionError):
        check("sum(rate(triggers_fire_total[5m]))", names)
    with pytest.raises(AssertionError):
        check('sum(rate(triggers_fires_total{result="x"}[5m]))', names)
    with pytest.raises(AssertionError):
        check("sum by (uid) (rate(triggers_fires_total[5m]))", names)
    with pytest.raises(AssertionError):
        check("sum(rate(triggers_fires_total[5m])", names)
