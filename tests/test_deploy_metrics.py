"""The monitoring examples under deploy/examples, checked offline and against each other.

PodMonitor, prometheus-adapter rule, queued-work HPA and Grafana dashboard must
agree with the server Deployment (port, flags) and with each other (metric
names). Their schemas are checked in test_deploy.py; that their queries name
only metrics a real server exports, and run in a real Prometheus, is checked in
test_metrics_prometheus.py.
"""

from __future__ import annotations

import json
import re

import yaml
from test_deploy import DEPLOYMENT, EXAMPLES, ROOT, example_docs, find, kustomize, serve_args
from test_deploy import server_container as container_of

DASHBOARD = ROOT / EXAMPLES / "grafana-dashboard.json"
ADAPTER_RULE_KEYS = {"seriesQuery", "seriesFilters", "resources", "name", "metricsQuery"}


def adapter_rules() -> list[dict]:
    config = find(example_docs(ROOT), "ConfigMap", "prometheus-adapter-fseg")
    return yaml.safe_load(config["data"]["config.yaml"])["rules"]


def queued_work_hpa() -> dict:
    docs = [d for d in example_docs(ROOT) if d["__file__"].endswith("hpa-queued-jobs.yaml")]
    (hpa,) = docs
    return hpa


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_the_pod_monitor_scrapes_the_servers_metrics_port() -> None:
    docs = kustomize(ROOT / "deploy")
    deployment = find(docs, "Deployment", DEPLOYMENT)
    args, problems = serve_args(docs)
    assert problems == []
    monitor = find(example_docs(ROOT), "PodMonitor", "fseg-server")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"] for p in container_of(deployment)["ports"]}
    assert ports[endpoint["port"]] == args.metrics_port
    assert args.metrics_host == "0.0.0.0"  # reachable by Prometheus from other pods
    assert endpoint.get("path", "/metrics") == "/metrics"


def test_the_servers_log_in_json_for_the_fleet() -> None:
    args, _ = serve_args(kustomize(ROOT / "deploy"))
    assert args.log_format == "json"


def test_the_hpa_scales_on_the_metric_the_adapter_serves() -> None:
    hpa = queued_work_hpa()
    (metric,) = hpa["spec"]["metrics"]
    served = [rule["name"]["as"] for rule in adapter_rules()]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in served
    assert hpa["spec"]["scaleTargetRef"]["name"] == DEPLOYMENT
    assert hpa["metadata"]["name"] == "fseg-server"  # it replaces the CPU HPA, never beside it


def test_the_adapter_rule_sums_queued_and_running_jobs_per_pod() -> None:
    (rule,) = adapter_rules()
    assert set(rule) <= ADAPTER_RULE_KEYS
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    query = rule["metricsQuery"]
    assert "fseg_jobs_queued{<<.LabelMatchers>>}" in query
    assert "fseg_jobs_running{<<.LabelMatchers>>}" in query
    assert "by (<<.GroupBy>>)" in query


def test_the_cpu_autoscaler_stays_as_the_fallback() -> None:
    (cpu,) = [d for d in kustomize(ROOT / "deploy") if d["kind"] == "HorizontalPodAutoscaler"]
    assert [m["type"] for m in cpu["spec"]["metrics"]] == ["Resource"]
    assert "hpa-queued-jobs.yaml" in (ROOT / "deploy/base/hpa.yaml").read_text()


def test_every_dashboard_panel_queries_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["type"] == "prometheus"
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
    names = {n for q in dashboard_queries() for n in re.findall(r"\bfseg_\w+", q)}
    assert len(names) >= 10  # every family the server exports has a panel
