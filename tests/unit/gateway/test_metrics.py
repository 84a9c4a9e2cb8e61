"""The gateway's request and error series exist at 0 from the start, one per status, so a
dashboard's error rate and the error-rate alert read 0 before the first error, not nothing."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from screwops_gateway.config import LineLabels
from screwops_gateway.metrics import OTHER, STATUSES, GatewayMetrics


def values(reader: InMemoryMetricReader, name: str) -> dict[str, float]:
    """Metric ``name``'s value per ``status`` label."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        str((point.attributes or {})["status"]): float(getattr(point, "value", 0))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    }


def test_every_status_is_exported_at_zero_until_counted() -> None:
    reader = InMemoryMetricReader()
    metrics = GatewayMetrics(MeterProvider(metric_readers=[reader]))
    assert values(reader, "screwops_gateway_requests") == dict.fromkeys(STATUSES, 0.0)
    errors = dict.fromkeys((s for s in STATUSES if s != "OK"), 0.0)
    assert values(reader, "screwops_gateway_errors") == errors

    metrics.finished("UNAVAILABLE", 0.01)
    metrics.finished("OK", 0.01)
    assert values(reader, "screwops_gateway_errors") == errors | {"UNAVAILABLE": 1.0}
    assert values(reader, "screwops_gateway_requests")["OK"] == 1.0


def verdict_lines(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        str((point.attributes or {})["line_id"]): float(getattr(point, "value", 0))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "screwops_gateway_verdicts"
        for point in metric.data.data_points
    }


def test_lines_past_the_first_ones_seen_are_counted_as_other() -> None:
    reader = InMemoryMetricReader()
    metrics = GatewayMetrics(MeterProvider(metric_readers=[reader]), lines=LineLabels(most=2))

    for line in ("line-1", "line-2", "line-3", "line-1", "line-4"):
        metrics.verdict("m", 1, "GOOD", line)

    assert verdict_lines(reader) == {"line-1": 2.0, "line-2": 1.0, OTHER: 2.0}


def test_only_the_listed_lines_are_named() -> None:
    reader = InMemoryMetricReader()
    lines = LineLabels(known=("line-2",), most=5)
    metrics = GatewayMetrics(MeterProvider(metric_readers=[reader]), lines=lines)

    for line in ("line-1", "line-2", "line-3"):
        metrics.verdict("m", 1, "DEFECT", line)

    assert verdict_lines(reader) == {"line-2": 1.0, OTHER: 2.0}


def test_batch_sizes_and_queue_waits_are_histograms_for_the_dashboards() -> None:
    reader = InMemoryMetricReader()
    metrics = GatewayMetrics(MeterProvider(metric_readers=[reader]))
    metrics.batched(4)
    metrics.batched(1)
    metrics.queued(0.002)

    data = reader.get_metrics_data()
    assert data is not None
    points = {
        metric.name: point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
        if metric.name.startswith("screwops_gateway_batch_")
    }
    sizes = points["screwops_gateway_batch_size"]
    waits = points["screwops_gateway_batch_queue_wait"]
    assert (getattr(sizes, "count", 0), getattr(sizes, "sum", 0)) == (2, 5)
    assert getattr(waits, "count", 0) == 1


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, str], ...], object]:
    """Metric ``name``'s data points by their sorted labels."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        tuple(sorted((k, str(v)) for k, v in (point.attributes or {}).items())): point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    }


def test_a_rollouts_sides_are_counted_by_version_role_and_path() -> None:
    reader = InMemoryMetricReader()
    metrics = GatewayMetrics(MeterProvider(metric_readers=[reader]))
    drops = points(reader, "screwops_gateway_off_path_dropped")
    assert {getattr(p, "value", None) for p in drops.values()} == {0}
    assert len(drops) == 4  # production and shadow, full and decode_busy

    metrics.model_called("m", 2, role="canary", path="response", outcome="answered", seconds=0.004)
    metrics.model_called("m", 1, role="production", path="off_path", outcome="failed", seconds=2)
    metrics.compared("m", 2, "canary", agree=False, difference=-0.3)

    calls = points(reader, "screwops_gateway_model_calls")
    canary = (
        ("model_name", "m"),
        ("model_version", "2"),
        ("outcome", "answered"),
        ("path", "response"),
        ("role", "canary"),
    )
    assert getattr(calls[canary], "value", None) == 1
    latency = points(reader, "screwops_gateway_model_call_duration")
    assert {dict(k)["role"] for k in latency} == {"canary", "production"}
    [agreement] = points(reader, "screwops_gateway_rollout_agreement")
    assert dict(agreement)["agreement"] == "disagree"
    [difference] = points(reader, "screwops_gateway_rollout_score_difference").values()
    assert getattr(difference, "sum", None) == 0.3
