"""Dead letters: what a message that could not be processed carries to ``<topic>.dlq``.

The dead letter keeps the original key, value and headers byte for byte, so ``dlq replay`` can
put the very same message back on its topic, and adds ``x-dlq-*`` headers saying why, where from
and when. Nothing is dropped silently: a message is either processed or dead-lettered.

A message can fit its topic and still not fit its dead letter: the headers add a few hundred
bytes, and a topic may take what the producer may not send (a compressed batch, a raised
``max.message.bytes``). Such a body goes to the object store (:class:`BodyStore`) and the record
carries a :class:`StoredBody` pointing to it instead, so the consumer moves on rather than having
Kafka refuse the dead letter on every redelivery.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from screwops_storage import StoredObject

PREFIX = "x-dlq-"
REASON = f"{PREFIX}reason"
ERROR_TYPE = f"{PREFIX}error-type"
CONSUMER = f"{PREFIX}consumer"
TOPIC = f"{PREFIX}original-topic"
PARTITION = f"{PREFIX}original-partition"
OFFSET = f"{PREFIX}original-offset"
FAILED_AT = f"{PREFIX}failed-at"
ATTEMPTS = f"{PREFIX}attempts"
BODY_REF = f"{PREFIX}body-ref"
BODY_SHA256 = f"{PREFIX}body-sha256"
BODY_SIZE = f"{PREFIX}body-size"
EVENT_ID = f"{PREFIX}event-id"

# Kafka headers are small; a reason is a sentence plus the error, never a whole traceback.
MAX_REASON_CHARS = 2000

RECORD_MARGIN_BYTES = 4096
"""Room left under the producer's limit when a dead letter's size is estimated: FastStream adds
its own headers on publish (content type, correlation id, trace context)."""


class BodyStore(Protocol):
    """Where dead-letter bodies too large for Kafka are kept: the part of
    :class:`screwops_storage.ObjectStore` the bus and ``dlq replay`` use, so tests pass a fake."""

    async def put_named(self, bucket: str, key: str, data: bytes) -> StoredObject:
        """Store ``data`` under ``key`` with its digest recorded."""
        ...

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes:
        """The object's bytes, only if they hash to ``sha256``."""
        ...


@dataclass(frozen=True)
class StoredBody:
    """A dead letter's body kept in the object store, because the record would not fit Kafka.

    The record's value is then :meth:`placeholder`, and its headers point to the body;
    ``event_id`` is the envelope's id, if the body has one, so ``dlq list`` and ``dlq replay
    --event-id`` still name the message without fetching it.
    """

    bucket: str
    key: str
    sha256: str
    size: int
    event_id: str | None

    @property
    def ref(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"

    def placeholder(self) -> bytes:
        """The record's value in the body's stead: a small JSON document saying where it is.

        JSON, not nothing, because the record keeps the original headers, whose content type
        (JSON for every event) a reader decodes the value by.
        """
        return json.dumps(
            {"stored_body": self.ref, "sha256": self.sha256, "size": self.size}
        ).encode()

    def headers(self) -> dict[str, str]:
        """The ``x-dlq-body-*`` headers that point to the body."""
        pointer = {BODY_REF: self.ref, BODY_SHA256: self.sha256, BODY_SIZE: str(self.size)}
        return pointer | ({EVENT_ID: self.event_id} if self.event_id else {})

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> StoredBody | None:
        """The pointer in a dead letter's headers; None when the body is the record's value.

        Raises:
            ValueError: the pointer is malformed.
        """
        if (ref := headers.get(BODY_REF)) is None:
            return None
        bucket, _, key = ref.removeprefix("s3://").partition("/")
        if not ref.startswith("s3://") or not bucket or not key:
            raise ValueError(f"{BODY_REF} {ref!r} is not s3://bucket/key")
        sha256, size = headers.get(BODY_SHA256), headers.get(BODY_SIZE)
        if not sha256 or size is None:
            raise ValueError(f"{BODY_REF} {ref!r} comes without {BODY_SHA256} and {BODY_SIZE}")
        return cls(bucket, key, sha256, int(size), headers.get(EVENT_ID))

    @classmethod
    def of(cls, body: bytes, *, bucket: str, topic: str, partition: int, offset: int) -> StoredBody:
        """Where ``body``, read at ``topic[partition]@offset``, is kept.

        The key holds the bytes' digest as well as where they were read, so a topic recreated
        with its offsets starting over never overwrites another message's body.
        """
        digest = hashlib.sha256(body).hexdigest()
        return cls(
            bucket=bucket,
            key=f"{topic}/{partition}/{offset}-{digest}",
            sha256=digest,
            size=len(body),
            event_id=envelope_event_id(body),
        )


def envelope_event_id(value: bytes) -> str | None:
    """The ``event_id`` of an event envelope; None for a value that is not one (malformed)."""
    try:
        envelope = json.loads(value)
    except ValueError:
        return None
    found = envelope.get("event_id") if isinstance(envelope, dict) else None
    return found if isinstance(found, str) and found else None


def record_bytes(key: bytes | None, value: bytes, headers: dict[str, str]) -> int:
    """The most a record of ``key``, ``value`` and ``headers`` takes in a batch of its own, as
    aiokafka's producer builds it: what the broker compares with ``max.message.bytes``.

    aiokafka's own check before sending leaves the headers out, so a dead letter the producer
    lets through can still be refused by the broker.
    """
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        key, value, [(name, text.encode()) for name, text in headers.items()]
    )
    return size


@dataclass(frozen=True)
class DeadLetter:
    """Why and where a message failed; rendered into (and parsed back from) Kafka headers."""

    reason: str
    error_type: str
    consumer: str
    topic: str
    partition: int
    offset: int
    attempts: int
    failed_at: datetime

    def headers(self, original: dict[str, str]) -> dict[str, str]:
        """The original headers plus this dead letter's, without stale ``x-dlq-*`` ones."""
        kept = {k: v for k, v in original.items() if not k.startswith(PREFIX)}
        return kept | {
            REASON: self.reason[:MAX_REASON_CHARS],
            ERROR_TYPE: self.error_type,
            CONSUMER: self.consumer,
            TOPIC: self.topic,
            PARTITION: str(self.partition),
            OFFSET: str(self.offset),
            ATTEMPTS: str(self.attempts),
            FAILED_AT: self.failed_at.isoformat(),
        }

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> DeadLetter:
        """Read a dead letter back (for ``dlq list`` and ``dlq replay``)."""
        return cls(
            reason=headers[REASON],
            error_type=headers[ERROR_TYPE],
            consumer=headers[CONSUMER],
            topic=headers[TOPIC],
            partition=int(headers[PARTITION]),
            offset=int(headers[OFFSET]),
            attempts=int(headers[ATTEMPTS]),
            failed_at=datetime.fromisoformat(headers[FAILED_AT]).astimezone(UTC),
        )


def original_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers a replayed message gets: the dead letter's own removed."""
    return {k: v for k, v in headers.items() if not k.startswith(PREFIX)}
