"""The gateway's handlers on FastStream's in-memory broker: deployments and rollbacks switch the
production version (once ready and warm), whatever order or how often they come, and rollout
changes reach the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from faststream.kafka import TestKafkaBroker
from screwops_bus import Bus
from screwops_gateway import handlers

from tests.fakes import memory_bus
from tests.support import model_deployed, model_rolled_back
from tests.unit.gateway.fakes import MODEL, START, Harness, harness, rollout_changed


@pytest.fixture
async def wired() -> AsyncIterator[tuple[Bus, Harness]]:
    bus = memory_bus("gateway")
    h = harness(production=1)
    await h.service.refresh()
    handlers.register(bus, h.service)
    async with TestKafkaBroker(bus.broker):
        yield bus, h


async def test_a_deployment_then_a_rollback_move_production(wired: tuple[Bus, Harness]) -> None:
    bus, h = wired
    deployed = model_deployed(MODEL, 2, at=START + timedelta(minutes=1))
    rolled_back = model_rolled_back(MODEL, 2, 1, at=START + timedelta(minutes=2))

    await bus.publish(deployed)
    after_deploy = h.store.models[MODEL].version
    await bus.publish(rolled_back)
    await bus.publish(deployed)  # redelivered late: already processed, changes nothing

    assert (after_deploy, h.store.models[MODEL].version) == (2, 1)
    assert h.service.production is not None
    assert h.service.production.version == 1
    assert [v for v, how in h.metrics.switches if how == "event"] == [2, 1]


async def test_a_rollout_change_reaches_the_service(wired: tuple[Bus, Harness]) -> None:
    bus, h = wired

    await bus.publish(rollout_changed(2, sequence=2, share=25.0, step=1))

    assert h.service.rollout is not None
    assert (h.service.rollout.candidate.version, h.service.rollout.share) == (2, 25.0)
    assert h.store.rollouts[MODEL].sequence == 2
