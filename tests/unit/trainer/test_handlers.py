"""Trainer's handlers on FastStream's in-memory broker: one ``model.trained`` per event however
often it comes, and a request the trainer must refuse dead-lettered with its reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from screwops_bus import Bus
from screwops_contracts import (
    ModelDegraded,
    ModelDegradedPayload,
    Topic,
    TrainingRequested,
    TrainingRequestedPayload,
    dlq_topic,
)
from screwops_contracts.events import ModelTrained
from screwops_trainer import handlers

from tests.fakes import memory_bus
from tests.unit.trainer.fakes import Parts, rejected, validated
from tests.unit.validation.builders import balanced


@dataclass
class Wired:
    bus: Bus
    parts: Parts
    trained: list[ModelTrained] = field(default_factory=list)
    dead: list[KafkaMessage] = field(default_factory=list)


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    bus = memory_bus("trainer")
    parts = Parts(emit=bus.emit)  # the service emits through the bus, as in __main__
    handlers.register(bus, parts.service(), max_run_s=600)
    w = Wired(bus, parts)

    @bus.broker.subscriber(Topic.MODEL_TRAINED)
    async def on_model_trained(event: ModelTrained) -> None:
        w.trained.append(event)

    @bus.broker.subscriber(dlq_topic(Topic.TRAINING_REQUESTED))
    async def on_dead_letter(message: KafkaMessage) -> None:
        w.dead.append(message)

    @bus.broker.subscriber(dlq_topic(Topic.MODEL_DEGRADED))
    async def on_degraded_dead_letter(message: KafkaMessage) -> None:
        w.dead.append(message)

    async with TestKafkaBroker(bus.broker):
        yield w


async def test_a_validated_version_is_trained_once_however_often_it_comes(wired: Wired) -> None:
    cause = await validated(wired.parts.objects, "screws", balanced(20))

    await wired.bus.publish(cause)
    await wired.bus.publish(cause)

    [event] = wired.trained
    assert (event.producer, event.causation_id) == ("trainer", cause.event_id)
    assert event.key == b"screw-classifier"
    assert event.payload.reused is False
    assert len(wired.parts.fit.calls) == 1


async def test_a_request_for_a_rejected_version_is_dead_lettered_with_the_reason(
    wired: Wired,
) -> None:
    await wired.bus.publish(rejected("screws", 4))
    ask = TrainingRequested.origin(
        TrainingRequestedPayload(
            model_name="screw-classifier",
            dataset_id="screws",
            dataset_version=4,
            reason="operator",
            requested_by="ana",
        ),
        producer="cli",
    )

    await wired.bus.publish(ask)

    [letter] = wired.dead
    reason = letter.headers["x-dlq-reason"]
    assert "screws v4 was rejected by validation" in reason
    assert "class 'bad' has 5" in reason
    assert wired.trained == []
    assert wired.parts.fit.calls == []


async def test_a_degradation_alone_trains_nothing_and_bad_bytes_are_dead_lettered(
    wired: Wired,
) -> None:
    await wired.bus.publish(await validated(wired.parts.objects, "screws", balanced(20)))
    degraded = ModelDegraded.origin(
        ModelDegradedPayload(
            model_name="screw-classifier",
            model_version=3,
            signal="score_drift",
            value=0.4,
            threshold=0.2,
            window=500,
        ),
        producer="monitor",
    )

    await wired.bus.publish(degraded)
    await wired.bus.broker.publish(b"not an event", topic=Topic.MODEL_DEGRADED)

    assert len(wired.trained) == 1, "only the validated version was trained"
    [letter] = wired.dead
    assert letter.headers["x-dlq-reason"].startswith("malformed event")
