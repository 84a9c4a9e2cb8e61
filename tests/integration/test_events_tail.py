"""``screwops events tail`` on the real broker: a topic's events from its beginning, as JSON
lines, stopping after --limit; an unknown topic is refused with the catalogue."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_bus import Bus
from screwops_contracts import DatasetIngested
from screwops_settings import StackSettings

from tests.support import dataset_ingested, run_cli, unique


@pytest.fixture
async def publisher(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]
) -> AsyncIterator[Bus]:
    bus = Bus(settings, service=unique("it-tail"), db=mongo_db)
    await bus.broker.start()
    yield bus
    await bus.broker.stop()


async def test_tail_from_the_beginning_prints_each_event_and_stops_at_the_limit(
    publisher: Bus, kafka_topic: str
) -> None:
    sent = [dataset_ingested(f"tail-{n}") for n in range(3)]
    for event in sent:
        await publisher.publish(event, topic=kafka_topic)

    code, out, err = await run_cli(
        "events", "tail", kafka_topic, "--from-beginning", "--limit", "2", "--json"
    )

    assert code == 0, err
    assert [DatasetIngested.model_validate(json.loads(line)) for line in out.splitlines()] == (
        sent[:2]
    )

    code, out, err = await run_cli(
        "events", "tail", kafka_topic, "--from-beginning", "--limit", "1"
    )
    assert code == 0, err
    assert str(sent[0].event_id) in out
    assert "dataset_id=tail-0" in out


async def test_an_unknown_topic_is_refused_with_the_catalogue() -> None:
    code, _, err = await run_cli("events", "tail", unique("no-such-topic"))
    assert code == 2
    assert "the catalogue's topics are: dataset.ingested" in err
