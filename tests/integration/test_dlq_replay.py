"""Dead letters replayed on the real broker: a malformed message goes through a bus consumer to
its DLQ, ``screwops dlq replay`` puts it back on its topic byte for byte (and, since nothing was
fixed, the consumer dead-letters it again, and copies of it are replayed once); an event replayed
once its handler is fixed takes effect once, and replaying it again changes nothing; an event
that fits its topic (produced compressed) but not its dead letter keeps its body in MinIO, the
partition keeps flowing, and ``dlq replay`` restores the body from there.

Each test has its own stand-in for ``dataset.ingested`` and its DLQ (:func:`routed_topics`), so it
meets no other test's events and no service's consumer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_bus import DeadLetter, RetryPolicy, StoredBody, replay_dead_letters
from screwops_contracts import DatasetIngested, Topic, dlq_topic
from screwops_errors import InvalidInputError
from screwops_settings import StackSettings, kafka_client_options
from screwops_storage import ObjectStore

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
    [done] = await replay_dead_letters(
        settings.kafka, dlq_topic(topic), event_ids=[str(event.event_id)]
    )
    assert (done.topic, done.letter.event_id) == (topic, str(event.event_id))

    async def took_effect() -> bool | None:
        return True if event in effects else None

    await eventually(took_effect, within=60, what="the replayed event's effect")

    # Replaying it again: the consumer has processed this event_id, so it skips the copy.
    await replay_dead_letters(settings.kafka, dlq_topic(topic), event_ids=[str(event.event_id)])
    marker = dataset_ingested("marker")
    await bus.publish(marker)  # same single partition: handled after the second copy

    async def marker_done() -> bool | None:
        return True if marker in effects else None

    await eventually(marker_done, within=60, what="the event after the second replay")
    assert effects == [event, marker]


async def test_an_event_too_large_for_its_dead_letter_keeps_its_body_in_minio_and_is_replayed(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any], routes: dict[str, str]
) -> None:
    topic = routes[Topic.DATASET_INGESTED]
    store = ObjectStore.from_settings(settings.minio)
    await store.ensure_buckets(settings.minio.dead_letter_bucket)
    bus = RoutedBus(
        settings,
        service=unique("it-dlq-big"),
        db=mongo_db,
        retry=RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02),
        routes=routes,
        bodies=store,
    )
    handled: list[str] = []

    @bus.consumer(DatasetIngested)
    async def on_dataset_ingested(event: DatasetIngested) -> None:
        handled.append(event.payload.dataset_id)
        if event.payload.dataset_id == "screws":
            raise InvalidInputError("image 3 is not a PNG")

    # Over the producer's 1 MiB uncompressed, well under the topic's max.message.bytes gzipped:
    # the topic takes it, its dead letter (sent uncompressed, headers added) would not fit.
    event = dataset_ingested("screws")
    payload = event.payload.model_copy(
        update={"manifest_key": event.payload.manifest_key + "m" * (1100 * 1024)}
    )
    big = event.model_copy(update={"payload": payload})
    body = big.model_dump_json().encode()
    assert len(body) > settings.kafka.max_request_bytes
    producer = AIOKafkaProducer(
        **kafka_client_options(settings.kafka),
        compression_type="gzip",
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, body, key=b"screws", headers=[("content-type", b"application/json")]
        )
        # Same key, same partition: handled only if the partition moved past the big one.
        small = dataset_ingested("bolts").model_dump_json().encode()
        await producer.send_and_wait(
            topic, small, key=b"screws", headers=[("content-type", b"application/json")]
        )
    finally:
        await producer.stop()

    await bus.broker.start()
    try:
        [dead] = await records_of(settings, dlq_topic(topic), 1, within=60)

        async def flowed() -> bool | None:
            return True if handled[-1:] == ["bolts"] else None

        await eventually(flowed, within=60, what="the event after the oversized one")
        assert handled == ["screws", "bolts"]

        stored = StoredBody.from_headers(headers_of(dead))
        assert stored is not None
        assert stored.bucket == settings.minio.dead_letter_bucket
        assert (stored.size, stored.event_id) == (len(body), str(big.event_id))
        assert dead.value == stored.placeholder()
        assert await store.get_verified(stored.bucket, stored.key, sha256=stored.sha256) == body

        [listed] = await screwops("dlq", "list", topic)
        assert listed["stored_body"] == stored.ref
        assert listed["event_id"] == str(big.event_id)

        [replayed] = await screwops("dlq", "replay", topic, "--event-id", str(big.event_id))
        assert (replayed["topic"], replayed["offset"]) == (topic, 2)
        *_, again = await records_of(settings, topic, 3, within=60)
        assert (again.key, again.value) == (b"screws", body)
        assert not any(k.startswith("x-dlq-") for k in headers_of(again))
    finally:
        await bus.broker.stop()
