"""Prometheus alert rules and the Grafana dashboard use metrics the services really export."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.test_deploy_common import DEPLOY, metric_exists, promql_metrics

PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "handshake.json"

RULES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["groups"],
    "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "rules"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": {"type": "string", "pattern": r"^\d+[smhdwy]$"},
                    "rules": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["alert", "expr", "for", "labels", "annotations"],
                            "additionalProperties": False,
                            "properties": {
                                "alert": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                                "expr": {"type": "string", "minLength": 1},
                                "for": {"type": "string", "pattern": r"^(\d+[smhdwy])+$"},
                                "keep_firing_for": {"type": "string"},
                                "labels": {
                                    "type": "object",
                                    "required": ["severity"],
                                    "properties": {"severity": {"enum": ["critical", "warning", "info"]}},
                                    "additionalProperties": {"type": "string"},
                                },
                                "annotations": {
                                    "type": "object",
                                    "required": ["summary", "description"],
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


@cache
def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())


def rule_files() -> list[Path]:
    return [PROMETHEUS / Path(p).name for p in prometheus_config()["rule_files"]]


@cache
def alert_rules() -> tuple[dict[str, Any], ...]:
    return tuple(
        rule
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    )


@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_prometheus_config_loads_rule_files_that_exist() -> None:
    assert rule_files(), "prometheus.yml should load the alert rules"
    for path in rule_files():
        assert path.is_file(), f"rule file {path.name} is missing from deploy/prometheus"
    jobs = {job["job_name"] for job in prometheus_config()["scrape_configs"]}
    assert {"ingest", "aggregator", "api"} <= jobs


@pytest.mark.parametrize("path", sorted(PROMETHEUS.glob("*.yml")), ids=lambda p: p.name)
def test_prometheus_files_parse(path: Path) -> None:
    assert isinstance(yaml.safe_load(path.read_text()), dict)


def test_alert_rules_structure() -> None:
    for path in rule_files():
        jsonschema.validate(yaml.safe_load(path.read_text()), RULES_SCHEMA)
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "alert names must be unique"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_accepts_rules_and_config(tmp_path: Path) -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", *map(str, rule_files())], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    config = dict(prometheus_config())
    config["rule_files"] = [str(p) for p in rule_files()]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_alerts_cover_the_pipeline() -> None:
    text = " ".join(rule["expr"] for rule in alert_rules())
    for needed in (
        "handshake_aggregator_consumer_lag",  # consumer lag growing
        "handshake_aggregator_dead_letters_total",  # dead letters
        'ingest_http_requests_total{status=~"5..',  # ingest 5xx
        "ingest_ready",  # broker unreachable, per service
        "handshake_api_ready",
        "handshake_aggregator_recovered",
        "handshake_api_view_staleness_seconds",  # api view staleness
        "handshake_api_reconcile_differing_pairs",  # aggregates and the event index disagree
        "handshake_api_index_lag",  # the event index falls behind
    ):
        assert needed in text, f"no alert uses {needed}"


def test_alert_metrics_exist_in_the_services() -> None:
    missing = {
        f"{rule['alert']}: {name}"
        for rule in alert_rules()
        for name in promql_metrics(rule["expr"])
        if not metric_exists(name)
    }
    assert not missing, (
        f"alert rules use metrics no service exports (grep services/ handshake/): {sorted(missing)}"
    )


def test_grafana_provisioning() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yaml").read_text())
    assert providers["providers"][0]["type"] == "file"
    uids = {
        p["datasource"]["uid"]
        for p in panels()
        if isinstance(p.get("datasource"), dict) and "uid" in p["datasource"]
    }
    assert uids == {source["uid"]}, "panels must use the provisioned datasource uid"


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels():
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and all(t.get("expr") for t in panel["targets"]), panel["title"]


def test_dashboard_covers_the_pipeline() -> None:
    text = " ".join(t["expr"] for p in panels() for t in p.get("targets", []))
    for needed in (
        "ingest_http_requests_total",
        "ingest_records_total",
        "ingest_produce_seconds_bucket",
        "handshake_aggregator_events_total",
        "handshake_aggregator_consumer_lag",
        "handshake_aggregator_dead_letters_total",
        "handshake_api_stream_clients",
        "handshake_api_view_pairs",
        "handshake_api_view_staleness_seconds",
    ):
        assert needed in text, f"no dashboard panel shows {needed}"


def test_dashboard_metrics_exist_in_the_services() -> None:
    missing = {
        f"{panel['title']}: {name}"
        for panel in panels()
        for target in panel.get("targets", [])
        for name in promql_metrics(target["expr"])
        if not metric_exists(name)
    }
    assert not missing, (
        f"dashboard panels use metrics no service exports (grep services/ handshake/): {sorted(missing)}"
    )
