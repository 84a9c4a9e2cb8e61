"""``screwops stack services status --json``: one object per service, for scripts."""

from __future__ import annotations

import json

import pytest
from screwops_settings.services import Service
from screwops_stack import cli as stack_cli
from screwops_stack import supervisor

from tests.unit.cli.support import screwops


def test_json_lists_every_service_and_exits_1_when_one_is_not_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problems = {"gateway": "", "registry": "metrics port 9104 refused"}
    specs = [s for s in supervisor.available() if s.name in problems]
    monkeypatch.setattr(supervisor, "available", lambda: specs)

    def problem(spec: Service) -> str:
        return problems[spec.name]

    monkeypatch.setattr(stack_cli, "_service_problem", problem)
    result = screwops("stack", "services", "status", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [
        {"name": s.name, "ready": not problems[s.name], "problem": problems[s.name]} for s in specs
    ]
    assert {s.name for s in specs} == set(problems)


def test_json_exits_0_when_every_service_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_cli, "_service_problem", lambda spec: "")
    result = screwops("stack", "services", "status", "--json")
    assert result.exit_code == 0
    assert all(state["ready"] and state["problem"] == "" for state in json.loads(result.stdout))
