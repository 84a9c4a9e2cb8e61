"""Dead letters read back and replayed, without a broker: what a record says, which records are
one message, and what goes back on which topic, a body kept in the object store included."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from screwops_bus import DeadLetter, DeadLetterRecord, StoredBody, replay
from screwops_bus.replay import distinct
from screwops_contracts import dlq_topic
from screwops_errors import IntegrityError, InvalidInputError

from tests.fakes import FakeObjects
from tests.support import dataset_ingested

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ORIGINAL_HEADERS = {"content-type": "application/json", "traceparent": "00-ab-cd-01"}


def letter(
    value: bytes,
    *,
    topic: str = "dataset.ingested",
    offset: int = 0,
    key: bytes | None = b"screws",
    consumer: str = "labeling",
    at: datetime = T0,
    headers: dict[str, str] | None = None,
) -> DeadLetterRecord:
    """A record as the bus writes it to ``<topic>.dlq``."""
    dead = DeadLetter(
        reason="handler failed: InvalidInputError('no')",
        error_type="InvalidInputError",
        consumer=consumer,
        topic=topic,
        partition=0,
        offset=offset,
        attempts=1,
        failed_at=at,
    )
    stored = dead.headers(ORIGINAL_HEADERS if headers is None else headers)
    return DeadLetterRecord(
        topic=dlq_topic(topic),
        partition=0,
        offset=offset,
        timestamp=at,
        key=key,
        value=value,
        headers=tuple((k, v.encode()) for k, v in stored.items()),
    )


@dataclass
class FakeProducer:
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})
        return SimpleNamespace(partition=0, offset=100 + len(self.sent))


def test_a_record_says_why_where_from_and_which_event() -> None:
    event = dataset_ingested("screws")
    record = letter(event.model_dump_json().encode(), offset=7)

    assert record.letter is not None
    assert record.letter.consumer == "labeling"
    assert record.letter.offset == 7
    assert record.original_topic == "dataset.ingested"
    assert record.event_id == str(event.event_id)
    assert record.identity == str(event.event_id)
    assert record.header_map["x-dlq-reason"].startswith("handler failed")


def test_a_malformed_message_has_no_event_id_and_is_known_by_its_bytes() -> None:
    png = letter(b"\x89PNG not json")
    other = letter(b"\x89PNG not json", key=b"other")
    array = letter(b'["not", "an", "envelope"]')

    assert png.event_id is None
    assert array.event_id is None
    assert png.identity.startswith("sha256:")
    assert png.identity == letter(b"\x89PNG not json", offset=3).identity
    assert png.identity != other.identity
    assert array.identity != png.identity


def test_without_dlq_headers_the_original_topic_comes_from_the_dlq_name() -> None:
    bare = DeadLetterRecord(
        topic="model.trained.dlq",
        partition=0,
        offset=0,
        timestamp=T0,
        key=None,
        value=b"{}",
        headers=(),
    )
    assert bare.letter is None
    assert bare.original_topic == "model.trained"


def test_replay_headers_are_the_original_ones_byte_for_byte() -> None:
    record = letter(b"{}")
    assert dict(record.replay_headers()) == {k: v.encode() for k, v in ORIGINAL_HEADERS.items()}


def test_copies_of_one_message_are_replayed_once_oldest_first() -> None:
    event = dataset_ingested("screws")
    body = event.model_dump_json().encode()
    later = T0 + timedelta(seconds=5)
    letters = [
        letter(b"garbage", offset=2, at=later),
        letter(body, offset=1, consumer="validation", at=T0 + timedelta(seconds=1)),
        letter(body, offset=0, consumer="labeling"),
        letter(b"garbage", offset=3, at=later + timedelta(seconds=1)),
    ]
    assert [(r.offset, r.letter and r.letter.consumer) for r in distinct(letters)] == [
        (0, "labeling"),
        (2, "labeling"),
    ]


async def test_replay_puts_the_original_message_back_on_its_topic() -> None:
    event = dataset_ingested("screws")
    body = event.model_dump_json().encode()
    producer = FakeProducer()

    done = await replay(producer, [letter(body, offset=4), letter(b"\x89PNG", offset=5)])

    assert producer.sent == [
        {
            "topic": "dataset.ingested",
            "value": body,
            "key": b"screws",
            "headers": [(k, v.encode()) for k, v in ORIGINAL_HEADERS.items()],
        },
        {
            "topic": "dataset.ingested",
            "value": b"\x89PNG",
            "key": b"screws",
            "headers": [(k, v.encode()) for k, v in ORIGINAL_HEADERS.items()],
        },
    ]
    assert [(r.letter.offset, r.topic, r.partition, r.offset) for r in done] == [
        (4, "dataset.ingested", 0, 101),
        (5, "dataset.ingested", 0, 102),
    ]


async def test_a_replayed_message_that_was_replayed_before_carries_no_stale_dlq_headers() -> None:
    # Dead-lettered again after a replay: the bus drops the first letter's x-dlq-* headers
    # before adding its own, and replay drops those, so the original headers come back intact.
    first = letter(b"{}", offset=0)
    again = letter(b"{}", offset=1, headers=first.header_map)
    producer = FakeProducer()
    await replay(producer, [again])
    assert producer.sent[0]["headers"] == [(k, v.encode()) for k, v in ORIGINAL_HEADERS.items()]


async def test_a_record_on_another_topics_dlq_is_refused_and_nothing_is_sent() -> None:
    good = letter(b"{}")
    misplaced = DeadLetterRecord(
        topic="model.trained.dlq",
        partition=0,
        offset=9,
        timestamp=T0,
        key=None,
        value=b"[]",
        headers=letter(b"[]").headers,  # names dataset.ingested as its original topic
    )
    producer = FakeProducer()
    with pytest.raises(InvalidInputError, match="not replaying"):
        await replay(producer, [good, misplaced])
    assert producer.sent == []


def stored_letter(
    body: bytes, store: FakeObjects, *, offset: int = 0, key: bytes | None = b"screws"
) -> DeadLetterRecord:
    """A record as the bus writes it when ``body`` is too large for it: the body in ``store``."""
    stored = StoredBody.of(
        body, bucket="dead-letters", topic="dataset.ingested", partition=0, offset=offset
    )
    store.objects[(stored.bucket, stored.key)] = body
    record = letter(stored.placeholder(), offset=offset, key=key)
    return DeadLetterRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp,
        key=record.key,
        value=record.value,
        headers=record.headers + tuple((k, v.encode()) for k, v in stored.headers().items()),
    )


async def test_a_body_kept_in_minio_is_replayed_as_it_was_and_named_without_fetching_it() -> None:
    store = FakeObjects()
    event = dataset_ingested("screws")
    body = event.model_dump_json().encode()
    record = stored_letter(body, store)
    assert record.event_id == str(event.event_id)
    producer = FakeProducer()

    await replay(producer, [record], bodies=store)

    assert producer.sent == [
        {
            "topic": "dataset.ingested",
            "value": body,
            "key": b"screws",
            "headers": [(k, v.encode()) for k, v in ORIGINAL_HEADERS.items()],
        }
    ]


def test_kept_bodies_without_an_event_id_are_told_apart_by_their_bytes() -> None:
    store = FakeObjects()
    png = stored_letter(b"\x89PNG one", store)
    assert png.event_id is None
    assert png.identity.startswith("sha256:")
    assert png.identity == stored_letter(b"\x89PNG one", store, offset=3).identity
    assert png.identity != stored_letter(b"\x89PNG two", store).identity
    assert png.identity != stored_letter(b"\x89PNG one", store, key=b"other").identity


async def test_a_kept_body_that_changed_in_minio_is_refused_and_nothing_is_sent() -> None:
    store = FakeObjects()
    good = letter(b"{}")
    tampered = stored_letter(b"original bytes", store, offset=1)
    stored = tampered.stored_body
    assert stored is not None
    store.objects[(stored.bucket, stored.key)] = b"other bytes"
    producer = FakeProducer()
    with pytest.raises(IntegrityError):
        await replay(producer, [good, tampered], bodies=store)
    assert producer.sent == []


async def test_a_kept_body_needs_the_object_store_to_be_replayed() -> None:
    producer = FakeProducer()
    with pytest.raises(InvalidInputError, match="s3://dead-letters/"):
        await replay(producer, [stored_letter(b"{}", FakeObjects())])
    assert producer.sent == []
