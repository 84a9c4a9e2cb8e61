"""Registry's handlers on FastStream's in-memory broker: ``model.approved`` in and
``model.deployed`` out (once, however often the input comes); a broken artifact is the event's
outcome, not a dead letter; ``model.rejected`` is recorded and answered by nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from screwops_bus import Bus
from screwops_contracts import ModelDeployed, Topic, dlq_topic
from screwops_registry import handlers

from tests.fakes import BROKEN, memory_bus
from tests.unit.registry.fakes import Harness, harness


@dataclass
class Wired:
    bus: Bus
    h: Harness
    deployed: list[ModelDeployed] = field(default_factory=list)
    dead: list[bytes] = field(default_factory=list)


@pytest.fixture
async def wired(tmp_path: Path) -> AsyncIterator[Wired]:
    bus = memory_bus("registry", max_attempts=3)
    h = harness(tmp_path / "repository", bus=bus)
    handlers.register(bus, h.service)
    w = Wired(bus, h)

    @bus.broker.subscriber(Topic.MODEL_DEPLOYED)
    async def on_model_deployed(event: ModelDeployed) -> None:
        w.deployed.append(event)

    @bus.broker.subscriber(dlq_topic(Topic.MODEL_APPROVED))
    async def on_dead_letter(message: KafkaMessage) -> None:
        w.dead.append(message.body)

    async with TestKafkaBroker(bus.broker):
        yield w


async def test_an_approval_is_deployed_once_however_often_it_comes(wired: Wired) -> None:
    approval = wired.h.approval("run-a")

    await wired.bus.publish(approval)
    await wired.bus.publish(approval)

    [deployed] = wired.deployed
    assert deployed.producer == "registry"
    assert deployed.causation_id == approval.event_id
    assert (deployed.payload.version, deployed.payload.previous_version) == (1, None)
    assert wired.dead == []


async def test_a_broken_artifact_is_not_dead_lettered(wired: Wired) -> None:
    await wired.bus.publish(wired.h.approval("run-a", graph=BROKEN))

    assert wired.deployed == []
    assert wired.dead == []
    assert await wired.h.production() is None


async def test_triton_down_for_good_dead_letters_the_approval(wired: Wired) -> None:
    wired.h.triton.down = True

    await wired.bus.publish(wired.h.approval("run-a"))

    assert wired.deployed == []
    assert len(wired.dead) == 1


async def test_a_rejection_is_recorded(wired: Wired) -> None:
    await wired.bus.publish(wired.h.rejection("run-x"))

    assert list(wired.h.store.rejections) == [f"{wired.h.model}:eval-run-x"]
    assert wired.deployed == []
