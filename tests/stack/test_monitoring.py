"""A real Prometheus scrapes the stack; the dashboard's and the alerts' queries run against it."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest
import requests
import yaml

from launcher.stack import Stack
from tests.helpers import wait_for
from tests.stack.prometheus import PROMETHEUS_DIR, ROOT, binary, prometheus_of, query
from tests.stack.scrape import scrape

# One xdist worker runs this module whole (make test: --dist loadgroup), so that
# its module fixture (a Prometheus scraping the shared stack) is started once.
pytestmark = pytest.mark.xdist_group("test_monitoring")

DASHBOARD = ROOT / "monitoring" / "grafana" / "forecast-dashboard.json"


def dashboard_queries() -> list[str]:
    """Every panel's PromQL, with Grafana's interval variable replaced as Grafana would."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"].replace("$__rate_interval", "1m") for panel in panels for target in panel.get("targets", [])]


def alert_queries() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_exposition_passes_promtool_lint(stack: Stack) -> None:
    text = requests.get(f"{stack.url}/metrics", timeout=5).text
    result = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_and_alerts_use_only_metrics_the_server_exports(stack: Stack) -> None:
    requests.post(f"{stack.url}/predict", json={"date": "2018-01-21", "store": 1, "item": 1}, timeout=5)
    exported = {sample.name for sample in scrape(stack.url).samples}
    used = {name for query in dashboard_queries() + alert_queries() for name in re.findall(r"forecast_\w+", query)}
    assert used, "no forecast_ metric in the dashboard"
    # A pod following MLflow exports these: tests/stack/test_mlflow.py checks them on one
    assert {name for name in used - exported if not name.startswith("forecast_mlflow_")} == set()


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping the shared stack every second, with our alert rules loaded."""
    with prometheus_of(stack, tmp_path_factory.mktemp("prometheus")) as url:
        yield url


def test_prometheus_scrapes_every_process_of_the_stack(prometheus: str, stack: Stack) -> None:
    def target_up() -> bool:
        targets = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return bool(targets) and targets[0]["health"] == "up" and targets[0]["lastError"] == ""

    wait_for(target_up, 30)
    mules = query(prometheus, "forecast_mule_up")["data"]["result"]
    assert sorted((m["metric"]["mule"], m["value"][1]) for m in mules) == [("1", "1"), ("2", "1")]
    for _ in range(5):
        requests.post(f"{stack.url}/predict", json={"date": "2018-01-21", "store": 1, "item": 1}, timeout=5)

    def predictions_counted() -> bool:
        result = query(prometheus, 'sum(forecast_http_requests_total{endpoint="/predict",status="200"})')
        return bool(result["data"]["result"]) and float(result["data"]["result"][0]["value"][1]) >= 5

    wait_for(predictions_counted, 30)


def test_every_dashboard_and_alert_query_runs_in_prometheus(prometheus: str) -> None:
    for expr in dashboard_queries() + alert_queries():
        result = query(prometheus, expr)
        assert result["status"] == "success", (expr, result)

    def rules_evaluated() -> bool:
        groups = requests.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return len(rules) == len(alert_queries()) and all(rule["health"] == "ok" for rule in rules)

    wait_for(rules_evaluated, 30)
