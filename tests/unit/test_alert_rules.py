"""The alert rules in deploy/prometheus/rules are valid Prometheus rules, each alert says how
bad it is and what to do, and each one is covered by a promtool unit test that makes it fire
(deploy/prometheus/tests). promtool ships with Prometheus (Debian's package, which the native
stack installs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (it comes with Prometheus: `make up` installs it)")
    return found


def alerts() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_rule_files_exist() -> None:
    assert RULES, "no rule files in deploy/prometheus/rules"
    assert RULE_TESTS, "no rule tests in deploy/prometheus/tests"


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", *map(str, RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_as_their_unit_tests_say() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", *(p.name for p in RULE_TESTS)],
        cwd=PROMETHEUS / "tests",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), names
    for rule in alerts():
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= rule.get("annotations", {}).keys(), rule["alert"]


def test_every_alert_has_a_unit_test_that_makes_it_fire() -> None:
    fired = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in alerts()} <= fired
