"""The home page: per model, production and its threshold, the line's pace and defect rate
against its baseline, the monitor's signals, the alerts firing and the run in progress; the
services' health below."""

from __future__ import annotations

import re
import time

from fastapi.testclient import TestClient

from tests.unit.console.conftest import Console
from tests.unit.console.fakes import MODEL, FakePrometheus, Fakes, closed_port, run_record

Series = list[tuple[dict[str, str], float]]

MONITOR: Series = [
    ({"__name__": "screwops_monitor_reference", "model": MODEL, "version": "2",
      "figure": "evaluation_defect_rate"}, 0.05),
    ({"__name__": "screwops_monitor_reference", "model": MODEL, "version": "2",
      "figure": "defect_rate"}, 0.055),
    ({"__name__": "screwops_monitor_signal", "model": MODEL, "version": "2",
      "signal": "defect_rate"}, 0.125),
    ({"__name__": "screwops_monitor_signal_threshold", "model": MODEL, "version": "2",
      "signal": "defect_rate", "bound": "upper"}, 0.1),
    ({"__name__": "screwops_monitor_signal_fired", "model": MODEL, "version": "2",
      "signal": "defect_rate"}, 1.0),
    ({"__name__": "screwops_monitor_signal", "model": MODEL, "version": "2",
      "signal": "score_drift"}, 0.0412),
    ({"__name__": "screwops_monitor_signal_fired", "model": MODEL, "version": "2",
      "signal": "score_drift"}, 0.0),
    # An older version the monitor still exports: not production's, so not shown.
    ({"__name__": "screwops_monitor_reference", "model": MODEL, "version": "1",
      "figure": "evaluation_defect_rate"}, 0.5),
]  # fmt: skip
ALERTS: Series = [
    ({"__name__": "ALERTS", "alertname": "ScrewOpsModelDegraded", "alertstate": "firing",
      "severity": "critical", "model": MODEL, "version": "2", "signal": "defect_rate"}, 1.0),
    ({"__name__": "ALERTS", "alertname": "ScrewOpsConsumerLagHigh", "alertstate": "firing",
      "severity": "warning", "service": "monitor", "topic": "inspection.completed"}, 1.0),
]  # fmt: skip
FIGURES: dict[str, Series] = {
    "[5m]": [({}, 42.25)],
    "[1h]": [({"verdict": "DEFECT"}, 30.0), ({"verdict": "GOOD"}, 210.0)],
    "screwops_monitor_": MONITOR,
    "ALERTS": ALERTS,
}


def part(page: str, name: str) -> str:
    """The ``<dd>`` of the home page whose id is the model's ``name``."""
    start = page.index(f'id="{MODEL}-{name}"')
    return page[start : page.index("</dd>", start)]


def test_the_home_page_shows_each_models_line_at_a_glance(
    console: TestClient, fakes: Fakes, prometheus: FakePrometheus
) -> None:
    prometheus.series = dict(FIGURES)
    fakes.runs.runs.insert(0, run_record("run-000000000003", epochs=3, status="running"))
    page = console.get("/").text
    assert f'id="line-{MODEL}"' in page
    assert re.search(r"<strong>v2</strong> · threshold <strong class=\"threshold\">0\.0372<", page)
    assert "good-only" in part(page, "production")
    assert "<strong>42.2</strong> per minute" in part(page, "per-minute")
    # 30 DEFECT of 240 verdicts in the last hour, against 5 % on its test split.
    assert "<strong>12.5 %</strong> <small>(30 of 240)</small>" in part(page, "defect-rate")
    baseline = part(page, "baseline")
    assert "<strong>5.0 %</strong> on its test split (+7.5 points now)" in baseline
    assert "5.5 % in its first inspections in production" in baseline
    assert "alarms above 10.0 %" in baseline
    signals = part(page, "signals")
    assert re.search(
        r'class="signal down badge" id="[^"]+-signal-defect_rate">defect_rate 12\.5 % fired',
        signals,
    )
    assert re.search(
        r'class="signal ok badge" id="[^"]+-signal-score_drift">score_drift 0\.041 armed', signals
    )
    # The model's alerts beside it, the stack's apart.
    alerts = part(page, "alerts")
    assert "ScrewOpsModelDegraded" in alerts
    assert "signal=defect_rate" in alerts
    assert "ScrewOpsConsumerLagHigh" not in alerts
    stack = page[page.index('id="stack-alerts"') :]
    assert "ScrewOpsConsumerLagHigh" in stack
    assert "topic=inspection.completed" in stack
    runs = part(page, "runs")
    assert 'href="/pipeline#run-run-000000000003"' in runs
    assert "running on screws v1: epoch 3 of 10" in runs
    assert page.count(">SERVING<") == 4  # the services' health is still there


def test_the_figures_are_the_whole_lines_over_their_windows(
    console: TestClient, prometheus: FakePrometheus
) -> None:
    before = time.time()
    console.get("/")
    queries = [query for query, _ in prometheus.queries]
    model = f'model_name="{MODEL}"'
    assert f"sum(rate(screwops_gateway_verdicts_total{{{model}}}[5m])) * 60" in queries
    assert f"sum by (verdict) (increase(screwops_gateway_verdicts_total{{{model}}}[1h]))" in queries
    assert any("screwops_monitor_" in q and f'model="{MODEL}"' in q for q in queries)
    assert 'ALERTS{alertstate="firing"}' in queries
    assert len(queries) == 4
    assert all(before - 1 <= at <= time.time() + 1 for _, at in prometheus.queries)


def test_prometheus_down_leaves_the_rest_of_the_home_page(
    console: TestClient, fakes: Fakes, prometheus: FakePrometheus
) -> None:
    prometheus.down = True
    fakes.runs.runs.insert(0, run_record("run-000000000003", epochs=3, status="running"))
    answer = console.get("/")
    assert answer.status_code == 200
    page = answer.text
    assert "Prometheus: UNAVAILABLE: prometheus at http://127.0.0.1:" in page
    assert "not ready" in page
    assert 'id="stack-alerts"' not in page
    assert "Prometheus:" in part(page, "alerts")
    assert "<strong>v2</strong>" in part(page, "production")
    assert "run-000000000003" in part(page, "runs")
    assert page.count(">SERVING<") == 4


def test_the_registry_down_leaves_the_figures(
    make_console: Console, prometheus: FakePrometheus
) -> None:
    prometheus.series = dict(FIGURES)
    page = make_console(registry_address=closed_port(), rpc_timeout_s=2.0).get("/").text
    assert "registry: UNAVAILABLE" in part(page, "production")
    assert "<strong>12.5 %</strong>" in part(page, "defect-rate")
    # Production unknown, the monitor's newest version is the one its figures are read for.
    assert "<strong>5.0 %</strong> on its test split" in part(page, "baseline")


def test_a_quiet_line_says_what_is_missing(console: TestClient, fakes: Fakes) -> None:
    page = console.get("/").text
    assert "none counted in the last 5 min" in part(page, "per-minute")
    assert "no verdict in the last hour" in part(page, "defect-rate")
    assert "not yet (the monitor exports it once its reference window is full)" in part(
        page, "baseline"
    )
    assert "none reported by the monitor yet" in part(page, "signals")
    assert "none firing" in part(page, "alerts")
    runs = part(page, "runs")
    assert "none in progress; last" in runs
    assert "run-000000000002</a> finished" in runs
    fakes.registry.versions.clear()
    fakes.runs.runs.clear()
    page = console.get("/").text
    assert "none yet" in part(page, "production")
    assert "none yet" in part(page, "runs")
