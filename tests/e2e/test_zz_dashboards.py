"""Every query of every Grafana dashboard parses and returns series on the real Prometheus once a
pipeline run has gone through and the gateway has answered inspections.

Named to run after test_pipeline.py (pytest takes a folder's files in alphabetical order), whose
run it reuses; on its own it makes a run first (see tests/e2e/runs.py). Prometheus scrapes every
5 s, so each query is retried until its series appear, up to a deadline.

A query of what only a rollout makes (:data:`DURING_A_ROLLOUT`: the gateway compares a canary or a
shadow with production, and labels the series with the candidate's version) has to parse, and may
answer no series: none runs here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from screwops_settings import StackSettings
from screwops_synth import generate

from tests.e2e.runs import finished_run, inspect
from tests.support import eventually

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
# Grafana's built-in variables, as Grafana would fill them for a recent time range.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "3h"}
DURING_A_ROLLOUT = (
    "screwops_gateway_rollout_agreement",
    "screwops_gateway_rollout_score_difference",
)


def queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL) for every target of every panel."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        panels = [p for top in board["panels"] for p in (top, *top.get("panels", []))]
        for panel in panels:
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target["expr"]


def substituted(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a dashboard variable the test does not know: {expr}"
    return expr


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(1200)  # a run of its own when no other test made one: minutes
async def test_every_dashboard_query_returns_series(tmp_path: Path) -> None:
    settings = StackSettings()
    run = await finished_run(settings, tmp_path)
    # The serving panels need traffic through the gateway and Triton: a few held-out screws,
    # pinned to the run's version and as a line sends them, for production to answer (a pinned
    # request plays no rollout role, so the rollout row's per-role series need the others).
    generate(tmp_path / "held-out", good=2, defect=2, seed=29, size=256)
    for image in sorted((tmp_path / "held-out").rglob("*.png")):
        answer = await inspect(image.read_bytes(), version=run.deployed.payload.version)
        assert answer.model_version == run.deployed.payload.version
        await inspect(image.read_bytes(), version=None)

    found = list(queries())
    assert {name for name, _, _ in found} >= {"screwops-pipeline.json", "screwops-serving.json"}
    async with httpx.AsyncClient(base_url=settings.telemetry.prometheus_url) as prometheus:

        async def series(expr: str) -> list[dict[str, Any]] | None:
            response = await prometheus.get("/api/v1/query", params={"query": expr})
            body = response.json()
            # A query that does not parse is a 400 with the parser's message: fail at once.
            assert body["status"] == "success", f"{expr}: {body.get('error')}"
            result: list[dict[str, Any]] = body["data"]["result"]
            return result or None

        for name, title, expr in found:
            if any(metric in expr for metric in DURING_A_ROLLOUT):
                await series(substituted(expr))
                continue
            await eventually(
                functools.partial(series, substituted(expr)),
                within=60,
                interval=1.0,
                what=f"series for {name} / {title}: {expr}",
            )
    print(f"{len(found)} dashboard queries answered with series")
