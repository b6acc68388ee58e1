"""The alert rules: valid, and each one's unit test in alerts.test.yml passes (promtool)."""

from __future__ import annotations

import subprocess

import yaml

from tests.stack.prometheus import PROMETHEUS_DIR, binary


def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    promtool = binary("promtool")
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        result = subprocess.run([promtool, *command], cwd=PROMETHEUS_DIR, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_in_which_it_fires() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    alerts = {rule["alert"] for group in rules for rule in group["rules"]}
    cases = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    firing = {case["alertname"] for test in cases for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert alerts - firing == set(), "alerts without a test in which they fire"
