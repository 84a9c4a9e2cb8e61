"""The envelope every ScrewOps event travels in.

Every event on every topic has the same outer shape, so tooling (the DLQ, ``events tail``, the
tracing middleware, idempotency records) needs to know only the envelope; the payload is the
event's own model. Events caused by another event get a deterministic ``event_id`` derived from
their cause, so a handler that runs twice for one delivery publishes the same event twice, and the
consumer's processed-events record drops the second copy.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from screwops_contracts.limits import MAX_NAME_CHARS

P = TypeVar("P", bound=BaseModel)

# Namespace for ids derived from other ids (uuid5), fixed forever: changing it changes every id.
ID_NAMESPACE = uuid.UUID("7d0f3c1e-2b4a-5e8f-9a6b-3c5d7e9f1a2b")


class Payload(BaseModel):
    """Base of every payload: immutable, and unknown fields are refused rather than dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Event(BaseModel, Generic[P]):
    """One event: the envelope fields plus a typed ``payload``.

    Subclasses fix ``type`` (a Literal equal to their topic), ``TOPIC``, ``SCHEMA_VERSION`` and
    ``key_field`` (the payload field that is the aggregate id, used as the Kafka key so events
    about one dataset or model stay in order).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    TOPIC: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1
    key_field: ClassVar[str]

    event_id: uuid.UUID = Field(
        description="Unique id of this event; consumers deduplicate on it.",
        examples=["0b8f3f52-5c0e-4d1e-9a57-5d9f5a3b2c11"],
    )
    type: str = Field(description="The event type, equal to its topic.", examples=["model.trained"])
    schema_version: int = Field(
        description="Version of the payload schema; bumped on incompatible change.", examples=[1]
    )
    occurred_at: AwareDatetime = Field(
        description="When the producer observed the fact (UTC).",
        examples=["2026-11-24T10:15:00Z"],
    )
    producer: str = Field(
        max_length=MAX_NAME_CHARS,
        description="Service that emitted the event.",
        examples=["trainer"],
    )
    correlation_id: str = Field(
        max_length=MAX_NAME_CHARS,
        description="Id shared by every event of one pipeline run, from ingestion to deployment.",
        examples=["run-2026-11-24-0001"],
    )
    causation_id: uuid.UUID | None = Field(
        description="event_id of the event that caused this one; null for an origin event.",
        examples=["6a1d2c3b-4e5f-4a6b-8c7d-9e0f1a2b3c4d"],
    )
    payload: P = Field(description="The event's own data.")

    @model_validator(mode="after")
    def _matches_its_class(self) -> Self:
        # A message on the wrong topic or from a newer producer must fail loudly (to the DLQ
        # with this reason), never be half-understood.
        topic = getattr(type(self), "TOPIC", None)
        if topic is not None and self.type != topic:
            raise ValueError(f"type {self.type!r} does not match event {str(topic)!r}")
        if topic is not None and self.schema_version != self.SCHEMA_VERSION:
            raise ValueError(
                f"unsupported schema_version {self.schema_version} for {str(topic)!r} "
                f"(this consumer understands {self.SCHEMA_VERSION})"
            )
        return self

    @classmethod
    def origin(
        cls,
        payload: P,
        *,
        producer: str,
        correlation_id: str | None = None,
        key: str | None = None,
    ) -> Self:
        """A new event that starts a chain (an upload, an operator's request).

        Its id is fresh, or derived from ``key`` when the same request may be made twice (a
        retried gRPC call): then both copies share one id and consumers keep one.
        """
        event_id = (
            uuid.uuid5(ID_NAMESPACE, f"{producer}/{cls.TOPIC}/{key}") if key else uuid.uuid4()
        )
        return cls._build(
            payload,
            producer=producer,
            event_id=event_id,
            correlation_id=correlation_id or str(event_id),
            causation_id=None,
        )

    @classmethod
    def caused_by(
        cls, cause: Event[Any], payload: P, *, producer: str, discriminator: str = ""
    ) -> Self:
        """An event caused by ``cause``, with an id derived from it (see the module docstring).

        ``discriminator`` tells apart several events of one type caused by the same event.
        """
        event_id = uuid.uuid5(
            ID_NAMESPACE, f"{cause.event_id}/{producer}/{cls.TOPIC}/{discriminator}"
        )
        return cls._build(
            payload,
            producer=producer,
            event_id=event_id,
            correlation_id=cause.correlation_id,
            causation_id=cause.event_id,
        )

    @classmethod
    def _build(
        cls,
        payload: P,
        *,
        producer: str,
        event_id: uuid.UUID,
        correlation_id: str,
        causation_id: uuid.UUID | None,
    ) -> Self:
        return cls(
            event_id=event_id,
            type=str(cls.TOPIC),
            schema_version=cls.SCHEMA_VERSION,
            occurred_at=datetime.now(UTC),
            producer=producer,
            correlation_id=correlation_id,
            causation_id=causation_id,
            payload=payload,
        )

    @property
    def key(self) -> bytes:
        """The Kafka key: the aggregate id, so one aggregate's events keep their order."""
        return str(getattr(self.payload, self.key_field)).encode()
