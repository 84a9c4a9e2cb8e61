"""Dead letters read back, and replayed onto the topic they came from.

A dead letter (see :mod:`screwops_bus.deadletter`) keeps the original message's key, value and
headers byte for byte. Replaying one publishes exactly that message to its original topic again,
with the dead letter's own ``x-dlq-*`` headers removed, keyed as before (so it lands on the same
partition and stays in order with its aggregate's other events).

Replaying is safe for events some consumer did process: the message goes to every consumer group
of the topic, not only to the one that failed, but the bus skips an ``event_id`` a group has
already processed (:class:`~screwops_bus.idempotency.ProcessedEvents`), so a replay has an
effect only where the event had none. A message that fails again is dead-lettered again (a new
record on the DLQ; Kafka never removes the old one). Several records of one message (dead-
lettered by two consumer groups, or again after an earlier replay) are replayed once: records
are told apart by their ``event_id``, or by their bytes where the value names none.

A dead letter whose body was too large for its record (:class:`~screwops_bus.deadletter.StoredBody`)
is replayed with the body read back from the object store, checked against the sha256 and size
the record names: the original message goes back, never the empty placeholder.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from screwops_contracts import DLQ_SUFFIX, dlq_topic
from screwops_errors import IntegrityError, InvalidInputError, NotFoundError, UnavailableError
from screwops_settings import KafkaSettings, kafka_client_options

from screwops_bus.deadletter import (
    PREFIX,
    RECORD_MARGIN_BYTES,
    BodyStore,
    DeadLetter,
    StoredBody,
    envelope_event_id,
)

__all__ = [
    "DeadLetterRecord",
    "Producer",
    "Replayed",
    "UnknownTopicError",
    "distinct",
    "read_dead_letters",
    "replay",
    "replay_dead_letters",
]


class UnknownTopicError(NotFoundError):
    """A topic to read does not exist on the broker."""


# How long reading a topic to its end may make no progress before the broker is given up on.
STALL_SECONDS = 30.0
# aiokafka's default max_request_size, as the settings' kafka.max_request_bytes.
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of a ``<topic>.dlq`` topic, as stored: where it is, and its bytes."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_record(cls, record: Any) -> DeadLetterRecord:
        """From aiokafka's ``ConsumerRecord``."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
            key=record.key,
            value=record.value or b"",
            headers=tuple((name, bytes(value or b"")) for name, value in record.headers),
        )

    @property
    def header_map(self) -> dict[str, str]:
        """The headers as text (the bus writes text headers)."""
        return {name: value.decode(errors="replace") for name, value in self.headers}

    @property
    def letter(self) -> DeadLetter | None:
        """Why and where the message failed; None when the ``x-dlq-*`` headers are missing."""
        try:
            return DeadLetter.from_headers(self.header_map)
        except (KeyError, ValueError):
            return None

    @property
    def original_topic(self) -> str:
        """The topic the message failed on: the dead letter's header, else the DLQ's name."""
        letter = self.letter
        return letter.topic if letter is not None else self.topic.removesuffix(DLQ_SUFFIX)

    @property
    def stored_body(self) -> StoredBody | None:
        """Where the body is kept when it did not fit the record; None when it is the value.

        Raises:
            ValueError: the record's pointer is malformed.
        """
        return StoredBody.from_headers(self.header_map)

    @property
    def event_id(self) -> str | None:
        """The event's id, when the value is an event envelope (a malformed one may not be);
        for a body kept in the object store, the id its pointer recorded."""
        stored = _pointer(self)
        return stored.event_id if stored is not None else envelope_event_id(self.value)

    @property
    def identity(self) -> str:
        """What tells two copies of one message apart from two messages."""
        if (event_id := self.event_id) is not None:
            return event_id
        stored = _pointer(self)
        digest = hashlib.sha256(len(self.key or b"").to_bytes(8, "big"))
        digest.update(self.key or b"")
        digest.update(self.value if stored is None else f"stored:{stored.sha256}".encode())
        return f"sha256:{digest.hexdigest()}"

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The original message's headers: the dead letter's own removed."""
        return [(name, value) for name, value in self.headers if not name.startswith(PREFIX)]


@dataclass(frozen=True)
class Replayed:
    """A dead letter put back: the record it came from and where its copy now is."""

    letter: DeadLetterRecord
    topic: str
    partition: int
    offset: int


class Producer(Protocol):
    """What replaying needs of aiokafka's :class:`AIOKafkaProducer`."""

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Publish one record and wait for the broker's ack; returns its metadata."""
        ...


def distinct(letters: Iterable[DeadLetterRecord]) -> list[DeadLetterRecord]:
    """The first record of each message (by :attr:`DeadLetterRecord.identity`), oldest first."""
    seen: set[str] = set()
    kept = []
    for letter in sorted(letters, key=lambda r: (r.timestamp, r.partition, r.offset)):
        if letter.identity not in seen:
            seen.add(letter.identity)
            kept.append(letter)
    return kept


async def replay(
    producer: Producer, letters: Iterable[DeadLetterRecord], *, bodies: BodyStore | None = None
) -> list[Replayed]:
    """Publish each distinct message of ``letters`` to its original topic, oldest first, a body
    kept in the object store read back from ``bodies``.

    Raises:
        InvalidInputError: a record is not on the dead-letter twin of the topic it names (it
            would be replayed somewhere it never came from), or keeps its body in the object
            store and no ``bodies`` was given; nothing is published then.
        NotFoundError: a kept body is missing; nothing is published then.
        IntegrityError: a kept body does not match the sha256 or size its record names;
            nothing is published then.
    """
    chosen = distinct(letters)
    values = []
    for letter in chosen:
        if letter.topic != dlq_topic(letter.original_topic):
            raise InvalidInputError(
                f"{letter.topic}@{letter.partition}:{letter.offset} names original topic "
                f"{letter.original_topic!r}, whose dead letters go elsewhere; not replaying"
            )
        values.append(await _original_value(letter, bodies))
    done = []
    for letter, value in zip(chosen, values, strict=True):
        sent = await producer.send_and_wait(
            letter.original_topic,
            value=value,
            key=letter.key,
            headers=letter.replay_headers(),
        )
        done.append(Replayed(letter, letter.original_topic, sent.partition, sent.offset))
    return done


async def _original_value(letter: DeadLetterRecord, bodies: BodyStore | None) -> bytes:
    """The message's value: the record's, or the body its pointer names, verified."""
    where = f"{letter.topic}@{letter.partition}:{letter.offset}"
    try:
        stored = letter.stored_body
    except ValueError as exc:
        raise InvalidInputError(f"{where} has a malformed body pointer: {exc}") from exc
    if stored is None:
        return letter.value
    if bodies is None:
        raise InvalidInputError(f"{where} keeps its body in {stored.ref}: no object store given")
    value = await bodies.get_verified(stored.bucket, stored.key, sha256=stored.sha256)
    if len(value) != stored.size:
        raise IntegrityError(f"{stored.ref} holds {len(value)} bytes, {where} names {stored.size}")
    return value


async def read_dead_letters(
    kafka: KafkaSettings, topics: Sequence[str], *, newest: int | None = None
) -> list[DeadLetterRecord]:
    """Every record of ``topics`` up to their current end (or the ``newest`` of each topic).

    Reads without a consumer group, so nothing is committed and no service's group is touched.
    Records that arrive after the call began are left out, so the read always ends.

    Raises:
        UnknownTopicError: a topic does not exist on the broker.
        UnavailableError: the broker did not answer.
    """
    consumer = AIOKafkaConsumer(
        **kafka_client_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="screwops-dlq",
    )
    try:
        async with _running(consumer, kafka.bootstrap_servers):
            existing = await consumer.topics()
            missing = [topic for topic in topics if topic not in existing]
            if missing:
                raise UnknownTopicError(f"no such topic on the broker: {', '.join(missing)}")
            partitions = await _assigned(consumer, topics) if topics else []
            records = await _read_to_end(consumer, partitions, newest)
    except KafkaError as exc:
        raise UnavailableError(f"Kafka failed while reading {', '.join(topics)}: {exc}") from exc
    letters = [DeadLetterRecord.from_record(record) for record in records]
    if newest is not None:
        by_topic: dict[str, list[DeadLetterRecord]] = {}
        for letter in sorted(letters, key=lambda r: (r.timestamp, r.partition, r.offset)):
            by_topic.setdefault(letter.topic, []).append(letter)
        letters = [letter for kept in by_topic.values() for letter in kept[-newest:]]
    return sorted(letters, key=lambda r: (r.topic, r.timestamp, r.partition, r.offset))


async def _assigned(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics``, assigned to ``consumer``.

    Without a group, a subscription is assigned every partition of its topics as soon as the
    consumer has their metadata (``partitions_for_topic`` only knows topics already in the
    client's metadata, which a topic created since it started is not).
    """
    consumer.subscribe(list(topics))
    began = time.monotonic()
    while {tp.topic for tp in consumer.assignment()} != set(topics):
        if time.monotonic() - began > STALL_SECONDS:
            raise UnavailableError(f"Kafka gave no partitions of {', '.join(topics)}")
        await asyncio.sleep(0.05)
    return sorted(consumer.assignment())


async def _read_to_end(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], newest: int | None
) -> list[Any]:
    if not partitions:
        return []
    begin = await consumer.beginning_offsets(partitions)
    end = await consumer.end_offsets(partitions)
    start = {
        tp: begin[tp] if newest is None else max(begin[tp], end[tp] - newest) for tp in partitions
    }
    pending = set()
    for tp in partitions:
        consumer.seek(tp, start[tp])
        if start[tp] < end[tp]:
            pending.add(tp)
        else:
            consumer.pause(tp)
    records: list[Any] = []
    progressed = time.monotonic()
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=500)
        for tp, fetched in batch.items():
            records.extend(r for r in fetched if start[tp] <= r.offset < end[tp])
        for tp in list(pending):
            if await consumer.position(tp) >= end[tp]:
                pending.discard(tp)
                consumer.pause(tp)
        if batch:
            progressed = time.monotonic()
        elif time.monotonic() - progressed > STALL_SECONDS:
            raise UnavailableError(
                f"Kafka sent nothing for {STALL_SECONDS:.0f}s while reading "
                + ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(pending))
            )
        await asyncio.sleep(0)
    return records


async def replay_dead_letters(
    kafka: KafkaSettings,
    topic: str,
    *,
    event_ids: Collection[str] | None = None,
    bodies: BodyStore | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> list[Replayed]:
    """Replay the messages of DLQ ``topic`` (all, or those of ``event_ids``) onto their topic.

    ``topic`` may name the DLQ (``dataset.ingested.dlq``) or the topic it guards. ``event_ids``
    name messages by :attr:`DeadLetterRecord.identity`: the event's id, or for a message that
    names none (a malformed one) the ``sha256:...`` of its bytes. Bodies kept in the object
    store are read from ``bodies``; as they did not fit the producer's ``max_request_bytes``,
    the replay's producer takes the largest of them and compresses, as the message must have
    been to fit its topic in the first place.

    Raises:
        UnknownTopicError: the DLQ does not exist on the broker.
        NotFoundError: the DLQ holds no dead letter of some of ``event_ids`` (then nothing is
            replayed).
        UnavailableError: the broker did not answer.
    """
    dlq = topic if topic.endswith(DLQ_SUFFIX) else dlq_topic(topic)
    letters = await read_dead_letters(kafka, [dlq])
    if event_ids is not None:
        wanted = set(event_ids)
        letters = [letter for letter in letters if letter.identity in wanted]
        missing = wanted - {letter.identity for letter in letters}
        if missing:
            raise NotFoundError(f"{dlq} holds no dead letter of {', '.join(sorted(missing))}")
    if not letters:
        return []
    kept = [stored.size for letter in letters if (stored := _pointer(letter)) is not None]
    producer = AIOKafkaProducer(
        **kafka_client_options(kafka),
        acks="all",
        enable_idempotence=True,
        client_id="screwops-dlq-replay",
        max_request_size=max([max_request_bytes, *(size + RECORD_MARGIN_BYTES for size in kept)]),
        compression_type="gzip" if kept else None,
    )
    try:
        async with _running(producer, kafka.bootstrap_servers):
            return await replay(producer, letters, bodies=bodies)
    except KafkaError as exc:
        raise UnavailableError(f"Kafka failed while replaying {dlq}: {exc}") from exc


def _pointer(letter: DeadLetterRecord) -> StoredBody | None:
    """The record's body pointer; a malformed one is left for :func:`replay` to refuse."""
    try:
        return letter.stored_body
    except ValueError:
        return None


@asynccontextmanager
async def _running(
    client: AIOKafkaConsumer | AIOKafkaProducer, servers: str
) -> AsyncIterator[None]:
    """``client`` started (UnavailableError when the broker does not answer), then stopped."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        await client.stop()
        raise UnavailableError(f"Kafka did not answer at {servers}") from exc
    try:
        yield
    finally:
        await client.stop()
