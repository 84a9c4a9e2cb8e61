"""The event loop's lag ticker sees a callback that held the loop, and little else."""

from __future__ import annotations

import asyncio
import contextlib
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from screwops_telemetry import LOOP_LAG_BUCKETS_S, LoopLag


def lag_point(reader: InMemoryMetricReader) -> HistogramDataPoint:
    data = reader.get_metrics_data()
    assert data is not None
    [point] = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "screwops_event_loop_lag"
        for point in metric.data.data_points
    ]
    assert isinstance(point, HistogramDataPoint)
    return point


async def test_a_callback_holding_the_loop_shows_as_lag() -> None:
    reader = InMemoryMetricReader()
    ticker = asyncio.create_task(LoopLag(MeterProvider(metric_readers=[reader])).run())
    await asyncio.sleep(0.1)
    time.sleep(0.06)  # noqa: ASYNC251 - the point: a decode holding the loop
    await asyncio.sleep(0.05)
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker

    point = lag_point(reader)
    assert point.count >= 5
    assert point.max >= 0.05
    assert list(point.explicit_bounds) == list(LOOP_LAG_BUCKETS_S)
    assert sum(point.bucket_counts[LOOP_LAG_BUCKETS_S.index(0.05) + 1 :]) >= 1
