"""The gateway's handlers on FastStream's in-memory broker: deployments and rollbacks switch the
production version (once ready and warm), whatever order or how often they come."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import pytest
from faststream.kafka import TestKafkaBroker
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_bus import Bus, RetryPolicy
from screwops_contracts import (
    ModelDeployed,
    ModelDeployedPayload,
    ModelRolledBack,
    ModelRolledBackPayload,
)
from screwops_gateway import handlers
from screwops_settings import StackSettings

from tests.fakes import FakeDatabase
from tests.unit.gateway.fakes import MODEL, START, Harness, harness


@pytest.fixture
async def wired() -> AsyncIterator[tuple[Bus, Harness]]:
    bus = Bus(
        StackSettings(),
        service="gateway",
        db=cast(AsyncIOMotorDatabase[Any], FakeDatabase()),
        retry=RetryPolicy(max_attempts=2, initial_wait=0.001, max_wait=0.002),
    )
    h = harness(production=1)
    await h.service.refresh()
    handlers.register(bus, h.service)
    async with TestKafkaBroker(bus.broker):
        yield bus, h


def at(minutes: int) -> dict[str, Any]:
    return {"occurred_at": START + timedelta(minutes=minutes)}


async def test_a_deployment_then_a_rollback_move_production(wired: tuple[Bus, Harness]) -> None:
    bus, h = wired
    deployed = ModelDeployed.origin(
        ModelDeployedPayload(
            model_name=MODEL, version=2, previous_version=1, triton_model=MODEL, run_id="run-2"
        ),
        producer="registry",
    ).model_copy(update=at(1))
    rolled_back = ModelRolledBack.origin(
        ModelRolledBackPayload(
            model_name=MODEL,
            from_version=2,
            to_version=1,
            triton_model=MODEL,
            actor="ana",
            reason="false rejects",
        ),
        producer="registry",
    ).model_copy(update=at(2))

    await bus.publish(deployed)
    after_deploy = h.store.models[MODEL].version
    await bus.publish(rolled_back)
    await bus.publish(deployed)  # redelivered late: already processed, changes nothing

    assert (after_deploy, h.store.models[MODEL].version) == (2, 1)
    assert h.service.production is not None
    assert h.service.production.version == 1
    assert [v for v, how in h.metrics.switches if how == "event"] == [2, 1]
