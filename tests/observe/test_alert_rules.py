"""The shipped alert rules, Prometheus and Alertmanager examples, checked by their own tools."""

from __future__ import annotations

import subprocess

import yaml

from tests.roles import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"


def run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_every_alert_rule_passes_its_promtool_unit_tests() -> None:
    out = run("promtool", "test", "rules", str(PROMETHEUS / "alerts.test.yml"))
    assert "SUCCESS" in out


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    tested = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]  # a case where the alert must fire, not only stay quiet
    }
    assert tested == {rule["alert"] for rule in rules}


def test_the_prometheus_example_loads_the_rules() -> None:
    out = run("promtool", "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert "SUCCESS: 8 rules found" in out


def test_the_alertmanager_example_is_valid() -> None:
    run("amtool", "check-config", str(ROOT / "deploy" / "alertmanager" / "alertmanager.yml"))
