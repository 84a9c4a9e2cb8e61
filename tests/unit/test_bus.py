"""The bus's delivery rules, in memory (FastStream's TestKafkaBroker, a fake processed-events
store): parse or dead-letter, skip duplicates, retry transient failures, dead-letter the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiokafka.errors import RecordTooLargeError, UnknownTopicOrPartitionError
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_bus import Bus, DeadLetter, RetryPolicy, is_transient
from screwops_contracts import DatasetIngested, Topic, dlq_topic
from screwops_errors import InvalidInputError, UnavailableError
from screwops_settings import StackSettings

from tests.fakes import FakeDatabase
from tests.support import dataset_ingested


@dataclass
class Harness:
    bus: Bus
    db: FakeDatabase
    handled: list[DatasetIngested] = field(default_factory=list)
    dead: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    db = FakeDatabase()
    bus = Bus(
        StackSettings(),
        service="labeling",
        db=cast(AsyncIOMotorDatabase[Any], db),
        retry=RetryPolicy(max_attempts=3, initial_wait=0.001, max_wait=0.002),
    )
    h = Harness(bus=bus, db=db)

    @bus.consumer(DatasetIngested)
    async def on_dataset_ingested(ingested: DatasetIngested) -> None:
        h.handled.append(ingested)
        if h.failures:
            raise h.failures.pop(0)

    @bus.broker.subscriber(dlq_topic(Topic.DATASET_INGESTED))
    async def on_dead_letter(message: KafkaMessage) -> None:
        h.dead.append((message.body, dict(message.headers)))

    async with TestKafkaBroker(bus.broker):
        yield h


async def test_a_valid_event_reaches_the_handler_and_is_recorded(harness: Harness) -> None:
    sent = dataset_ingested("screws")
    await harness.bus.publish(sent)
    assert harness.handled == [sent]
    assert str(sent.event_id) in harness.db["processed_events_labeling"].docs
    assert harness.dead == []


async def test_a_redelivered_event_has_no_second_effect(harness: Harness) -> None:
    sent = dataset_ingested("screws")
    await harness.bus.publish(sent)
    await harness.bus.publish(sent)
    assert harness.handled == [sent]


async def test_a_malformed_message_is_dead_lettered_with_its_bytes_and_reason(
    harness: Harness,
) -> None:
    await harness.bus.broker.publish(
        b'{"not": "an event"}', topic=Topic.DATASET_INGESTED, headers={"origin": "upstream"}
    )
    assert harness.handled == []
    [(body, headers)] = harness.dead
    letter = DeadLetter.from_headers(headers)
    assert body == b'{"not": "an event"}'
    assert headers["origin"] == "upstream"
    assert letter.reason.startswith("malformed event:")
    assert "event_id" in letter.reason
    assert letter.consumer == "labeling"
    assert letter.topic == Topic.DATASET_INGESTED
    assert letter.attempts == 0


async def test_a_permanent_error_is_dead_lettered_without_retrying(harness: Harness) -> None:
    harness.failures.append(InvalidInputError("image 3 is not a PNG"))
    sent = dataset_ingested("screws")
    await harness.bus.publish(sent)
    assert len(harness.handled) == 1
    [(body, headers)] = harness.dead
    letter = DeadLetter.from_headers(headers)
    assert DatasetIngested.model_validate_json(body) == sent
    assert letter.error_type == "InvalidInputError"
    assert "image 3 is not a PNG" in letter.reason
    assert letter.attempts == 1
    assert str(sent.event_id) not in harness.db["processed_events_labeling"].docs


async def test_a_transient_error_is_retried_until_it_succeeds(harness: Harness) -> None:
    harness.failures.extend([UnavailableError("minio down"), ConnectionRefusedError()])
    sent = dataset_ingested("screws")
    await harness.bus.publish(sent)
    assert harness.handled == [sent, sent, sent]
    assert harness.dead == []
    assert str(sent.event_id) in harness.db["processed_events_labeling"].docs


async def test_a_transient_error_that_outlasts_the_retries_is_dead_lettered(
    harness: Harness,
) -> None:
    harness.failures.extend(UnavailableError("mongo down") for _ in range(5))
    await harness.bus.publish(dataset_ingested("screws"))
    assert len(harness.handled) == 3
    [(_, headers)] = harness.dead
    letter = DeadLetter.from_headers(headers)
    assert letter.reason.startswith("gave up after 3 attempts")
    assert letter.attempts == 3


def test_kafka_errors_a_retry_can_cure_are_transient_and_the_others_not() -> None:
    # Right after a broker restart a topic's leader is not known yet: retry, never dead-letter.
    assert is_transient(UnknownTopicOrPartitionError())
    assert not is_transient(RecordTooLargeError())
