"""The bus's metrics on the real broker: every outcome series exists at 0 from registration, and
the consumer-lag gauge counts the messages a busy consumer has not finished, then drops to 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from screwops_bus import Bus
from screwops_bus.bus import OUTCOMES
from screwops_contracts import DatasetIngested
from screwops_settings import StackSettings

from tests.support import dataset_ingested, eventually, unique


def points(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, Any]], float]:
    """The current value of each label set of metric ``name``."""
    found: dict[frozenset[tuple[str, Any]], float] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is not None:
                            found[frozenset((point.attributes or {}).items())] = float(value)
    return found


@pytest.fixture
async def metered(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]
) -> AsyncIterator[tuple[Bus, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    bus = Bus(
        settings,
        service=unique("it-metrics"),
        db=mongo_db,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    yield bus, reader
    await bus.broker.stop()


async def test_outcomes_start_at_zero_and_lag_follows_a_busy_consumer(
    metered: tuple[Bus, InMemoryMetricReader], event_topic: str
) -> None:
    bus, reader = metered
    release = asyncio.Event()
    handled: list[DatasetIngested] = []

    @bus.consumer(DatasetIngested, topic=event_topic)
    async def on_dataset_ingested(event: DatasetIngested) -> None:
        await release.wait()
        handled.append(event)

    labels = {("topic", event_topic), ("consumer", bus.service)}
    outcomes = points(reader, "screwops_bus_events")
    for outcome in OUTCOMES:
        assert outcomes[frozenset(labels | {("outcome", outcome)})] == 0

    await bus.broker.start()
    for n in range(3):
        await bus.publish(dataset_ingested(f"lag-{n}"), topic=event_topic)
    where = (bus.service, event_topic, 0)

    async def lag_is(expected: int) -> int | None:
        sampled = await bus.sample_lag()
        return expected if sampled.get(where) == expected else None

    # The first message is in flight (not committed) and two wait behind it.
    await eventually(lambda: lag_is(3), within=30, what="a lag of 3 while the handler waits")
    partition = frozenset({("consumer", bus.service), ("topic", event_topic), ("partition", "0")})
    assert points(reader, "screwops_bus_consumer_lag") == {partition: 3}

    release.set()
    await eventually(lambda: lag_is(0), within=30, what="the lag back to 0")
    assert len(handled) == 3
    assert (
        points(reader, "screwops_bus_events")[frozenset(labels | {("outcome", "processed")})] == 3
    )
    assert points(reader, "screwops_bus_published")[frozenset({("topic", event_topic)})] == 3
