"""Dead letters replayed on the real broker: a malformed message goes through a bus consumer to
its DLQ, ``screwops dlq replay`` puts it back on its topic byte for byte (and, since nothing was
fixed, the consumer dead-letters it again, and copies of it are replayed once); an event replayed
once its handler is fixed takes effect once, and replaying it again changes nothing.

Each test has its own stand-in for ``dataset.ingested`` and its DLQ (:func:`routed_topics`), so it
meets no other test's events and no service's consumer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_bus import DeadLetter, RetryPolicy, replay_dead_letters
from screwops_contracts import DatasetIngested, Topic, dlq_topic
from screwops_errors import InvalidInputError
from screwops_settings import StackSettings

from tests.integration.routing import RoutedBus, routed_topics
from tests.support import dataset_ingested, eventually, records_of, run_cli, unique

MALFORMED = b'{"type": "dataset.ingested", "payload": "not a payload"}'


async def screwops(*args: str) -> Any:
    """Run the real CLI with --json and return what it printed."""
    code, out, err = await run_cli(*args, "--json")
    assert code == 0, f"screwops {args} failed:\n{out}{err}"
    return json.loads(out)


def headers_of(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


@pytest.fixture
async def routes(settings: StackSettings) -> AsyncIterator[dict[str, str]]:
    async for routes in routed_topics(settings, [Topic.DATASET_INGESTED], "it-dlq"):
        yield routes


@pytest.fixture
async def bus(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any], routes: dict[str, str]
) -> AsyncIterator[RoutedBus]:
    bus = RoutedBus(
        settings,
        service=unique("it-dlq"),
        db=mongo_db,
        retry=RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02),
        routes=routes,
    )
    yield bus
    await bus.broker.stop()


async def test_a_malformed_event_replayed_from_its_dlq_arrives_again_on_its_topic(
    settings: StackSettings, bus: RoutedBus, routes: dict[str, str]
) -> None:
    topic = routes[Topic.DATASET_INGESTED]
    handled: list[DatasetIngested] = []

    @bus.consumer(DatasetIngested)
    async def on_dataset_ingested(event: DatasetIngested) -> None:
        handled.append(event)

    await bus.broker.start()
    await bus.broker.publish(MALFORMED, topic=topic, key=b"screws", headers={"source": "it"})
    [dead] = await records_of(settings, dlq_topic(topic), 1, within=60)

    [listed] = await screwops("dlq", "list", topic)
    assert listed["event_id"] is None
    assert listed["reason"].startswith("malformed event")
    assert (listed["original_topic"], listed["original_offset"]) == (topic, 0)
    assert listed["consumer"] == bus.service

    [replayed] = await screwops("dlq", "replay", dlq_topic(topic), "--event-id", listed["identity"])
    assert (replayed["topic"], replayed["partition"], replayed["offset"]) == (topic, 0, 1)
    assert replayed["from"] == f"{dlq_topic(topic)}@0:0"

    original, again = await records_of(settings, topic, 2, within=60)
    assert again.offset == 1
    assert (again.key, again.value) == (original.key, original.value) == (b"screws", MALFORMED)
    kept = {k: v for k, v in headers_of(dead).items() if not k.startswith("x-dlq-")}
    assert headers_of(again) == kept == headers_of(original)
    assert headers_of(again)["source"] == "it"
    assert not any(k.startswith("x-dlq-") for k in headers_of(again))

    # Nothing was fixed, so the consumer dead-letters the replayed copy in its turn.
    _, second = await records_of(settings, dlq_topic(topic), 2, within=60)
    letter = DeadLetter.from_headers(headers_of(second))
    assert (letter.topic, letter.offset) == (topic, 1)
    assert letter.reason.startswith("malformed event")

    # The DLQ now holds two copies of one message: --all replays it once.
    [once] = await screwops("dlq", "replay", dlq_topic(topic), "--all")
    assert (once["from"], once["offset"]) == (f"{dlq_topic(topic)}@0:0", 2)
    assert len(await records_of(settings, topic, 3, within=60)) == 3
    assert handled == []


async def test_a_replayed_event_takes_effect_once_and_a_second_replay_changes_nothing(
    settings: StackSettings, bus: RoutedBus, routes: dict[str, str]
) -> None:
    topic = routes[Topic.DATASET_INGESTED]
    broken = True
    effects: list[DatasetIngested] = []

    @bus.consumer(DatasetIngested)
    async def on_dataset_ingested(event: DatasetIngested) -> None:
        if broken:
            raise InvalidInputError("a bug in the handler")
        effects.append(event)

    await bus.broker.start()
    event = dataset_ingested("victim")
    await bus.publish(event)
    await records_of(settings, dlq_topic(topic), 1, within=60)

    broken = False  # the fix lands
    servers = settings.kafka.bootstrap_servers
    [done] = await replay_dead_letters(servers, dlq_topic(topic), event_ids=[str(event.event_id)])
    assert (done.topic, done.letter.event_id) == (topic, str(event.event_id))

    async def took_effect() -> bool | None:
        return True if event in effects else None

    await eventually(took_effect, within=60, what="the replayed event's effect")

    # Replaying it again: the consumer has processed this event_id, so it skips the copy.
    await replay_dead_letters(servers, dlq_topic(topic), event_ids=[str(event.event_id)])
    marker = dataset_ingested("marker")
    await bus.publish(marker)  # same single partition: handled after the second copy

    async def marker_done() -> bool | None:
        return True if marker in effects else None

    await eventually(marker_done, within=60, what="the event after the second replay")
    assert effects == [event, marker]
