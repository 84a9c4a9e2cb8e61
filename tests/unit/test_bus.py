"""The bus's delivery rules, in memory (FastStream's TestKafkaBroker, a fake processed-events
store): parse or dead-letter, skip duplicates, retry transient failures, dead-letter the rest,
the processed-events check and record included, and a body too large for its dead letter kept in
the object store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    UnknownTopicOrPartitionError,
)
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import AutoReconnect, OperationFailure
from screwops_bus import Bus, DeadLetter, DeadLetterRecord, RetryPolicy, StoredBody, is_transient
from screwops_bus.deadletter import record_bytes
from screwops_bus.replay import replay
from screwops_contracts import DatasetIngested, Topic, dlq_topic
from screwops_errors import InvalidInputError, UnavailableError
from screwops_settings import StackSettings

from tests.fakes import FakeCollection, FakeDatabase, FakeObjects
from tests.support import dataset_ingested
from tests.unit.test_replay import FakeProducer

QUICK = RetryPolicy(max_attempts=3, initial_wait=0.001, max_wait=0.002)


@dataclass
class Harness:
    bus: Bus
    db: FakeDatabase
    handled: list[DatasetIngested] = field(default_factory=list)
    dead: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)
    # How long each attempt works before it returns or fails, one each.
    durations: list[float] = field(default_factory=list)

    @property
    def processed(self) -> FakeCollection:
        return self.db["processed_events_labeling"]


@asynccontextmanager
async def open_harness(
    retry: RetryPolicy, *, bodies: FakeObjects | None = None
) -> AsyncIterator[Harness]:
    db = FakeDatabase()
    bus = Bus(
        StackSettings(),
        service="labeling",
        db=cast(AsyncIOMotorDatabase[Any], db),
        retry=retry,
        bodies=bodies,
    )
    h = Harness(bus=bus, db=db)

    @bus.consumer(DatasetIngested)
    async def on_dataset_ingested(ingested: DatasetIngested) -> None:
        h.handled.append(ingested)
        if h.durations:
            await asyncio.sleep(h.durations.pop(0))
        if h.failures:
            raise h.failures.pop(0)

    @bus.broker.subscriber(dlq_topic(Topic.DATASET_INGESTED))
    async def on_dead_letter(message: KafkaMessage) -> None:
        h.dead.append((message.body, dict(message.headers)))

    async with TestKafkaBroker(bus.broker):
        yield h


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with open_harness(QUICK) as h:
        yield h


async def test_a_valid_event_reaches_the_handler_and_is_recorded(harness: Harness) -> None:
    sent = dataset_ingested("screws")
    await harness.bus.publish(sent)
    assert harness.handled == [sent]
    assert str(sent.event_id) in harness.processed.docs
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
    assert str(sent.event_id) not in harness.processed.docs


async def test_a_transient_error_is_retried_until_it_succeeds(harness: Harness) -> None:
    harness.failures.extend([UnavailableError("minio down"), ConnectionRefusedError()])
    sent = dataset_ingested("screws")
    await harness.bus.publish(sent)
    assert harness.handled == [sent, sent, sent]
    assert harness.dead == []
    assert str(sent.event_id) in harness.processed.docs


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


async def test_a_handler_that_works_past_the_budget_is_still_retried_when_it_fails() -> None:
    # A training run that works longer than the whole retry budget, then meets a storage blip:
    # the budget counts from that failure, not from the handler's start.
    async with open_harness(RetryPolicy(max_seconds=0.2, initial_wait=0.001, max_wait=0.002)) as h:
        h.durations.append(0.3)
        h.failures.append(UnavailableError("minio down"))
        sent = dataset_ingested("screws")
        await h.bus.publish(sent)
    assert h.handled == [sent, sent]
    assert h.dead == []
    assert str(sent.event_id) in h.processed.docs


async def test_a_transient_failure_is_retried_for_max_seconds_from_its_first_failure() -> None:
    policy = RetryPolicy(max_seconds=0.05, max_attempts=10_000, initial_wait=0.01, max_wait=0.01)
    async with open_harness(policy) as h:
        h.failures.extend(UnavailableError("mongo down") for _ in range(10_000))
        await h.bus.publish(dataset_ingested("screws"))
    [(_, headers)] = h.dead
    letter = DeadLetter.from_headers(headers)
    assert letter.reason.startswith(f"gave up after {letter.attempts} attempts")
    # Waits of 10 to 20 ms within 50 ms of the first failure: a handful, never the 10,000.
    assert 2 <= letter.attempts <= 7


async def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise OperationFailure("not authorized on screwops")


async def _unreachable(*args: Any, **kwargs: Any) -> Any:
    raise AutoReconnect("mongo down")


@pytest.mark.parametrize(
    ("failure", "reason", "attempts"),
    [
        (_refuse, "processed-events check failed: OperationFailure(", 1),
        (_unreachable, "processed-events check failed: gave up after 3 attempts: ", 3),
    ],
    ids=["permanent", "transient"],
)
async def test_a_processed_events_check_that_fails_for_good_dead_letters_the_event(
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    failure: Any,
    reason: str,
    attempts: int,
) -> None:
    # Raising instead would nack the message and have it redelivered for as long as MongoDB
    # fails, holding up the partition.
    monkeypatch.setattr(harness.processed, "find_one", failure)
    sent = dataset_ingested("screws")
    await harness.bus.publish(sent)
    assert harness.handled == []
    [(body, headers)] = harness.dead
    letter = DeadLetter.from_headers(headers)
    assert DatasetIngested.model_validate_json(body) == sent
    assert letter.reason.startswith(reason)
    assert letter.attempts == attempts


async def test_a_record_that_fails_for_good_dead_letters_the_event_saying_the_handler_ran(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as broken:
        broken.setattr(harness.processed, "insert_one", _refuse)
        sent = dataset_ingested("screws")
        await harness.bus.publish(sent)
    assert harness.handled == [sent]
    [(body, headers)] = harness.dead
    letter = DeadLetter.from_headers(headers)
    assert letter.reason.startswith("handler ran, but recording the event as processed failed")
    assert letter.attempts == 1
    assert str(sent.event_id) not in harness.processed.docs
    # `dlq replay` puts it back: the handler runs again (it is idempotent), and this time it is
    # recorded.
    await harness.bus.broker.publish(body, topic=Topic.DATASET_INGESTED)
    assert harness.handled == [sent, sent]
    assert str(sent.event_id) in harness.processed.docs


@dataclass
class DeadLetterKafka:
    """Kafka refusing dead letters while ``away``, and when each refusal happened."""

    away: bool = True
    refused_at: list[float] = field(default_factory=list)
    refused: asyncio.Event = field(default_factory=asyncio.Event)


def refuse_dead_letters(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> DeadLetterKafka:
    kafka = DeadLetterKafka()
    publish = harness.bus.broker.publish

    async def publish_but_dead_letters(body: Any, *, topic: str, **kwargs: Any) -> Any:
        if kafka.away and topic == dlq_topic(Topic.DATASET_INGESTED):
            kafka.refused_at.append(time.monotonic())
            kafka.refused.set()
            raise KafkaConnectionError("Kafka away")
        return await publish(body, topic=topic, **kwargs)

    monkeypatch.setattr(harness.bus.broker, "publish", publish_but_dead_letters)
    return kafka


async def test_a_dead_letter_kafka_does_not_take_is_nacked_for_redelivery(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_dead_letters(harness, monkeypatch)
    monkeypatch.setattr(harness.processed, "find_one", _refuse)
    # The error reaches FastStream, which nacks: nothing is committed and the message comes again.
    with pytest.raises(KafkaConnectionError):
        await harness.bus.publish(dataset_ingested("screws"))
    assert harness.dead == []


async def _redeliver(h: Harness, kafka: DeadLetterKafka, body: bytes) -> float:
    """Deliver ``body`` again, as Kafka does after a nack (the in-memory broker gives every
    message partition 0, offset 0), and return how long the consumer held it after its dead
    letter was refused."""
    with pytest.raises(KafkaConnectionError):
        await h.bus.broker.publish(body, topic=Topic.DATASET_INGESTED)
    return time.monotonic() - kafka.refused_at[-1]


async def test_a_message_whose_dead_letter_kafka_refuses_comes_back_after_growing_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = RetryPolicy(max_attempts=1, initial_wait=0.01, max_wait=0.5)
    async with open_harness(policy) as h:
        kafka = refuse_dead_letters(h, monkeypatch)
        h.failures.extend(InvalidInputError("image 3 is not a PNG") for _ in range(7))
        sent = dataset_ingested("screws")
        body = sent.model_dump_json().encode()
        held = [await _redeliver(h, kafka, body) for _ in range(6)]
        # Each wait is at least initial_wait * 2 ** (failures - 1); back to back redeliveries
        # would be held for nothing.
        least = [0.01 * 2**n for n in range(6)]
        assert all(wait >= floor for wait, floor in zip(held, least, strict=True)), held
        assert h.dead == []

        # Kafka takes dead letters again: the message, redelivered, is dead-lettered once.
        kafka.away = False
        await h.bus.broker.publish(body, topic=Topic.DATASET_INGESTED)
        assert h.handled == [sent] * 7
        [(dead_body, headers)] = h.dead
        assert DatasetIngested.model_validate_json(dead_body) == sent
        assert "image 3 is not a PNG" in DeadLetter.from_headers(headers).reason

        # The partition moved on: the next refusal waits initial_wait again, not max_wait.
        kafka.away = True
        h.failures.append(InvalidInputError("image 4 is not a PNG"))
        other = dataset_ingested("bolts").model_dump_json().encode()
        assert await _redeliver(h, kafka, other) < 0.3


async def test_a_shutdown_ends_the_wait_before_a_redelivery_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_harness(RetryPolicy(max_attempts=1, initial_wait=60, max_wait=60)) as h:
        kafka = refuse_dead_letters(h, monkeypatch)
        h.failures.append(InvalidInputError("image 3 is not a PNG"))
        delivery = asyncio.create_task(h.bus.publish(dataset_ingested("screws")))
        await asyncio.wait_for(kafka.refused.wait(), timeout=5)
        await asyncio.sleep(0.05)
        assert not delivery.done()  # held for its backoff

        cancelled_at = time.monotonic()
        delivery.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(delivery, timeout=5)
        assert time.monotonic() - cancelled_at < 1
    assert h.dead == []


def test_the_backoff_doubles_with_each_failure_in_a_row_up_to_max_wait() -> None:
    policy = RetryPolicy(initial_wait=1.0, max_wait=8.0)
    for failures in range(1, 10):
        least = min(2.0 ** (failures - 1), 8.0)
        assert least <= policy.backoff(failures) <= min(least + 1.0, 8.0)


def test_kafka_errors_a_retry_can_cure_are_transient_and_the_others_not() -> None:
    # Right after a broker restart a topic's leader is not known yet: retry, never dead-letter.
    assert is_transient(UnknownTopicOrPartitionError())
    assert not is_transient(RecordTooLargeError())


# --- dead letters too large for Kafka -----------------------------------------------------------

LIMIT = StackSettings().kafka.max_request_bytes
# A handler's error message, as long as a reason may be: the dead letter's headers near 2 KiB.
LONG_FAILURE = "image 3 is not a PNG: " + "x" * 2000


def refuse_oversized_records(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Kafka refusing a record over the producer's limit, headers included, as the broker does
    (aiokafka's own check leaves headers out); returns the topics of the refused records."""
    refused: list[str] = []
    publish = harness.bus.broker.publish

    async def publish_within_limit(body: Any, *, topic: str, **kwargs: Any) -> Any:
        headers = kwargs.get("headers") or {}
        if record_bytes(kwargs.get("key"), body, headers) > LIMIT:
            refused.append(topic)
            raise MessageSizeTooLargeError(f"a record to {topic} is over {LIMIT} bytes")
        return await publish(body, topic=topic, **kwargs)

    monkeypatch.setattr(harness.bus.broker, "publish", publish_within_limit)
    return refused


def event_of(size: int) -> DatasetIngested:
    """A ``dataset.ingested`` whose JSON is ``size`` bytes."""
    event = dataset_ingested("screws")
    padding = size - len(event.model_dump_json().encode())
    payload = event.payload.model_copy(
        update={"manifest_key": event.payload.manifest_key + "m" * padding}
    )
    padded = event.model_copy(update={"payload": payload})
    assert len(padded.model_dump_json().encode()) == size
    return padded


async def test_an_event_that_fits_its_topic_but_not_its_dead_letter_keeps_its_body_in_minio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FakeObjects()
    async with open_harness(QUICK, bodies=store) as h:
        refused = refuse_oversized_records(h, monkeypatch)
        h.failures.append(InvalidInputError(LONG_FAILURE))
        sent = event_of(LIMIT - 600)
        body = sent.model_dump_json().encode()
        # The event itself fits; its dead letter would not. Before, Kafka refused the dead letter,
        # the message was nacked and came back, and was refused again: the partition stopped.
        await h.bus.publish(sent)
        # The partition moves on.
        await h.bus.publish(dataset_ingested("bolts"))

    assert refused == []
    assert [event.payload.dataset_id for event in h.handled] == ["screws", "bolts"]
    [(value, headers)] = h.dead
    stored = StoredBody.from_headers(headers)
    assert stored is not None
    assert json.loads(value) == {
        "stored_body": stored.ref,
        "sha256": stored.sha256,
        "size": len(body),
    }
    assert stored.bucket == "dead-letters"
    assert (stored.size, stored.event_id) == (len(body), str(sent.event_id))
    assert store.objects == {(stored.bucket, stored.key): body}
    assert stored.key.startswith(f"{Topic.DATASET_INGESTED}/0/0-")
    letter = DeadLetter.from_headers(headers)
    assert "image 3 is not a PNG" in letter.reason

    # `dlq replay` puts back the very message: its bytes from MinIO, its headers from the record.
    record = DeadLetterRecord(
        topic=dlq_topic(Topic.DATASET_INGESTED),
        partition=0,
        offset=0,
        timestamp=letter.failed_at,
        key=b"screws",
        value=value,
        headers=tuple((name, text.encode()) for name, text in headers.items()),
    )
    assert record.event_id == str(sent.event_id)
    producer = FakeProducer()
    await replay(producer, [record], bodies=store)
    [again] = producer.sent
    assert again["topic"] == Topic.DATASET_INGESTED
    assert again["value"] == body
    assert not any(name.startswith("x-dlq-") for name, _ in again["headers"])
    assert dict(again["headers"])["event-type"] == b"dataset.ingested"


async def test_a_small_event_is_still_dead_lettered_inline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FakeObjects()
    async with open_harness(QUICK, bodies=store) as h:
        refuse_oversized_records(h, monkeypatch)
        h.failures.append(InvalidInputError(LONG_FAILURE))
        sent = dataset_ingested("screws")
        await h.bus.publish(sent)
    [(value, headers)] = h.dead
    assert DatasetIngested.model_validate_json(value) == sent
    assert StoredBody.from_headers(headers) is None
    assert store.objects == {}


async def test_a_body_minio_does_not_take_is_nacked_and_dead_lettered_once_minio_is_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FakeObjects()
    policy = RetryPolicy(max_attempts=1, initial_wait=0.001, max_wait=0.002)
    async with open_harness(policy, bodies=store) as h:
        refuse_oversized_records(h, monkeypatch)
        h.failures.extend(InvalidInputError(LONG_FAILURE) for _ in range(2))
        body = event_of(LIMIT - 600).model_dump_json().encode()
        with monkeypatch.context() as down:
            down.setattr(store, "put_named", _minio_down)
            # Held for its backoff, then nacked: delivered again rather than lost.
            with pytest.raises(UnavailableError):
                await h.bus.broker.publish(body, topic=Topic.DATASET_INGESTED)
        assert h.dead == []
        await h.bus.broker.publish(body, topic=Topic.DATASET_INGESTED)
    [(value, headers)] = h.dead
    stored = StoredBody.from_headers(headers)
    assert stored is not None
    assert value == stored.placeholder()
    assert store.objects[(stored.bucket, stored.key)] == body


async def _minio_down(*args: Any, **kwargs: Any) -> Any:
    raise UnavailableError("MinIO did not answer")
