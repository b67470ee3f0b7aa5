"""deploy/: the Prometheus configuration, the alert rules and the Grafana dashboard parse,
cover what DESIGN §10 asks for, and use only metrics the running services expose."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import Credentials
from tests.stack import ServiceProcess, eventually, metric_value

try:  # a real PromQL parser when installed (pip install promql-parser)
    import promql_parser
except ImportError:  # pragma: no cover - the structural check below still runs
    promql_parser = None

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "safar.json"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"

# DESIGN §10, and who exposes each name.
DESIGN_METRICS = {
    "safar_ingest_events_total": "ingest",
    "safar_ingest_request_duration_seconds": "ingest",
    "safar_events_processed_total": "orchestrator",
    "safar_event_lag_seconds": "orchestrator",
    "safar_consumer_lag": "orchestrator",
    "safar_stage_transitions_total": "orchestrator",
    "safar_customers_in_stage": "api",
    "safar_rule_outcomes_total": "orchestrator",
    "safar_waits_pending": "orchestrator",
    "safar_wait_lateness_seconds": "orchestrator",
    "safar_actions_total": "orchestrator",
    "safar_event_to_action_seconds": "orchestrator",
    "safar_dlq_total": "orchestrator",
}
OWNERS = DESIGN_METRICS | {
    "safar_action_delivery_seconds": "orchestrator",
    "safar_waits_held": "orchestrator",
    "safar_recorder_records_total": "api",
    "safar_recorder_lag": "api",
    "safar_recorder_batch_seconds": "api",
    "safar_recorder_retries_total": "api",
    "safar_recorder_running": "api",
}
# What a rule with a wait and an action reports. The labelled ones show only their HELP
# and TYPE lines until first use, the others stay at zero: the live check drives one event
# through such a rule and expects samples of each, with the counts that event gives.
DRIVEN_BY_TRAFFIC = {
    "safar_rule_outcomes_total",
    "safar_waits_pending",
    "safar_wait_lateness_seconds",
    "safar_actions_total",
    "safar_action_delivery_seconds",
    "safar_event_to_action_seconds",
}
BUILTIN = {"up"}
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$journey": "purchase",
}
_SUFFIXES = ("_bucket", "_count", "_sum")


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    in_string = False
    for char in expr:
        if char == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack and not in_string


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects; fails on an expression that does not parse."""
    assert _balanced(expr), f"unbalanced brackets or quotes: {expr}"
    if promql_parser is None:
        without_strings = re.sub(r'"[^"]*"', '""', expr)
        return set(re.findall(r"\b(safar_[a-z0-9_]+|up)\b(?!\s*\()", without_strings))
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def grafana_expr(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def base_name(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        yield panel
        yield from panel.get("panels", [])


def used_names() -> set[str]:
    names: set[str] = set()
    for rule in alert_rules():
        names |= metric_names(rule["expr"])
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            names |= metric_names(grafana_expr(target["expr"]))
    return names


def test_prometheus_scrapes_the_three_services_and_loads_the_rules() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"safar-api", "safar-ingest", "safar-orchestrator"}
    ports = {
        name: job["static_configs"][0]["targets"][0].rsplit(":", 1)[1] for name, job in jobs.items()
    }
    assert ports == {"safar-api": "8080", "safar-ingest": "8081", "safar-orchestrator": "8082"}
    assert {job.get("metrics_path", "/metrics") for job in jobs.values()} == {"/metrics"}
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).is_file(), rule_file


def test_alert_rules_parse_and_cover_the_conditions_ops_asked_for() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        metric_names(rule["expr"])
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
            if promql_parser is not None:
                promql_parser.parse_duration(rule["for"])
    by_metric = {rule["alert"]: metric_names(rule["expr"]) for rule in rules}
    required = {
        "consumer lag growing": "safar_consumer_lag",
        "recorder lag growing": "safar_recorder_lag",
        "event -> action p99 over target": "safar_event_to_action_seconds_bucket",
        "wait lateness": "safar_wait_lateness_seconds_bucket",
        "DLQ growth": "safar_dlq_total",
        "ingest 5xx/503 rate": "safar_ingest_request_duration_seconds_count",
        "a service down": "up",
    }
    for what, metric in required.items():
        assert any(metric in used for used in by_metric.values()), f"no alert for {what}"
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in rules}
    # DESIGN §9 targets, as the alerts' thresholds.
    assert exprs["SafarEventToActionSlow"].endswith("> 0.1")
    assert exprs["SafarWaitsLate"].endswith("> 1")
    assert 'status="503"' in exprs["SafarIngestUnavailable"]


def test_the_dashboard_is_provisioned_and_every_query_parses() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text()
    )
    uid = datasources["datasources"][0]["uid"]
    providers = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "safar.yml").read_text())
    assert providers["providers"][0]["type"] == "file"
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = list(dashboard_panels())
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    titles = " | ".join(panel["title"] for panel in panels).lower()
    for wanted in ("funnel", "ingested", "processed", "lag", "duration", "actions by status",
                   "dead letters", "wait lateness", "event → action"):  # fmt: skip
        assert wanted in titles, wanted
    queries = 0
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert metric_names(grafana_expr(target["expr"])), target["expr"]
            queries += 1
    assert queries >= 20
    variable = dashboard["templating"]["list"][0]
    assert metric_names(variable["definition"].removeprefix("label_values(").split(",")[0])
    # Alerts and dashboard together show every metric DESIGN §10 lists.
    assert set(DESIGN_METRICS) <= {base_name(n) for n in used_names()}


def _exposed(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _sampled(text: str) -> set[str]:
    """Base names with at least one sample (HELP and TYPE lines alone do not count)."""
    return {
        base_name(re.split(r"[{ ]", line, maxsplit=1)[0])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


# One event through a rule with a short wait and a log action: it is triggered and
# scheduled, the timer fires it, the dispatcher delivers it.
NUDGE = {
    "key": "deploy-nudge",
    "trigger": {"event": "Product Added"},
    "wait": {"for": "1s"},
    "action": {"channel": "log", "message": "nudge {{ customer.id }}"},
}


@pytest.mark.timeout(120)
async def test_every_metric_of_the_alerts_and_dashboard_is_exposed_by_its_service(
    credentials: Credentials, service: Callable[..., ServiceProcess]
) -> None:
    api = await service("api").start()
    headers = {"Authorization": f"Bearer {credentials.admin_key}"}
    async with httpx.AsyncClient(timeout=10) as client:
        # The rule exists before the orchestrator starts: it is ready with the latest config.
        created = await client.post(f"{api.url}/v1/rules", json=NUDGE, headers=headers)
        assert created.status_code == 201, created.text
        processes = {
            "api": api,
            "orchestrator": await service("orchestrator").start(),
            "ingest": await service("ingest").start(),
        }
        sent = await client.post(
            f"{processes['ingest'].url}/v1/track",
            json={"userId": "deploy-check", "event": "Product Added"},
            auth=(credentials.write_key, ""),
        )
        assert sent.status_code == 200, sent.text

        async def orchestrator_metrics() -> str:
            return (await client.get(f"{processes['orchestrator'].url}/metrics")).text

        def delivered(text: str) -> bool:
            return (
                metric_value(text, "safar_actions_total", channel="log", status="sent") >= 1
                and metric_value(text, "safar_event_to_action_seconds_count") >= 1
                and metric_value(text, "safar_rule_outcomes_total", outcome="fired") >= 1
                and metric_value(text, "safar_waits_pending") == 0
            )

        await eventually(orchestrator_metrics, delivered, timeout=60, what="the nudge delivered")
        texts = {
            name: (await client.get(f"{process.url}/metrics")).text
            for name, process in processes.items()
        }
    exposed = {name: _exposed(text) for name, text in texts.items()}
    missing = []
    for name in sorted(used_names() - BUILTIN):
        owner = OWNERS.get(base_name(name))
        assert owner is not None, f"{name}: add it to OWNERS with the service exposing it"
        if name in exposed[owner] or base_name(name) in exposed[owner]:
            continue
        missing.append(f"{name} (expected from {owner})")
    assert not missing, "not exposed: " + ", ".join(missing)
    # The rule's decisions, its wait and its delivery have real samples by now.
    assert {base_name(n) for n in used_names()} >= DRIVEN_BY_TRAFFIC
    orchestrator = texts["orchestrator"]
    unsampled = DRIVEN_BY_TRAFFIC - _sampled(orchestrator)
    assert not unsampled, f"no samples after traffic: {sorted(unsampled)}"
    for outcome in ("triggered", "scheduled", "fired"):
        assert (
            metric_value(
                orchestrator, "safar_rule_outcomes_total", rule="deploy-nudge", outcome=outcome
            )
            == 1
        ), outcome
    assert metric_value(orchestrator, "safar_wait_lateness_seconds_count") == 1
    assert metric_value(orchestrator, "safar_action_delivery_seconds_count", channel="log") == 1
    assert metric_value(orchestrator, "safar_actions_total") == 1
    # The api's own metrics exist from the start, whatever the traffic.
    for name in ("safar_recorder_records_total", "safar_recorder_lag", "safar_recorder_running"):
        assert name in exposed["api"], name
