"""The real Prometheus loads the alert rules in deploy/prometheus/rules (the native stack's config
names that folder) and evaluates every one of them without error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml
from screwops_settings import StackSettings

from tests.support import eventually

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"


def rule_names() -> set[str]:
    return {
        rule.get("alert") or rule["record"]
        for path in RULES.glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }


async def test_prometheus_evaluates_every_rule(settings: StackSettings) -> None:
    wanted = rule_names()
    async with httpx.AsyncClient(base_url=settings.telemetry.prometheus_url) as prometheus:
        # Rules added since Prometheus started are read on a reload (--web.enable-lifecycle).
        (await prometheus.post("/-/reload")).raise_for_status()

        async def evaluated() -> dict[str, dict[str, Any]] | None:
            response = await prometheus.get("/api/v1/rules")
            response.raise_for_status()
            rules = {
                rule["name"]: rule
                for group in response.json()["data"]["groups"]
                for rule in group["rules"]
            }
            done = wanted <= rules.keys() and all(rules[n]["health"] != "unknown" for n in wanted)
            return rules if done else None

        rules = await eventually(evaluated, within=30, what="every rule evaluated by Prometheus")
    for name in wanted:
        assert rules[name]["health"] == "ok", f"{name}: {rules[name].get('lastError')}"
