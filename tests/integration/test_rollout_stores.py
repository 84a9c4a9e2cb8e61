"""The rollouts' MongoDB queries on the real FerretDB, which the unit tests only ran on in-memory
stand-ins: the gateway's serving state (an upsert under ``$and``/``$or`` of ``$lt``/``$exists``
that collides with a document its filter does not match, a later production move unsetting the
rollout) and the registry's rollout changes (each a compare-and-set of production's alias, a
completion moving production in the same update), driven by the registry service itself on a
fake Triton and object store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_contracts import ModelDeployed, ModelRolloutChanged
from screwops_errors import FailedPreconditionError
from screwops_gateway.store import MongoServingStateStore, ServingState
from screwops_registry.config import (
    Deployment,
    RolloutPolicies,
    RolloutPolicy,
    RolloutStrategy,
)
from screwops_registry.placement import Placement
from screwops_registry.service import RegistryService
from screwops_registry.store import MongoRegistryStore, MoveKind, RolloutChangeKind, RolloutState
from screwops_settings import StackSettings
from screwops_storage import database

from tests.fakes import FakeObjects, RecordingBus
from tests.unit.gateway.fakes import MODEL, START, deployed
from tests.unit.gateway.test_store import rollout
from tests.unit.registry.fakes import FakeStore, FakeTriton, Harness, new_id

CANARY = RolloutPolicy(
    strategy=RolloutStrategy.CANARY,
    steps=(5.0, 25.0, 100.0),
    min_inspections=5,
    min_step_seconds=1.0,
)


@pytest.fixture
async def db(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]
) -> AsyncIterator[AsyncIOMotorDatabase[Any]]:
    """The test's database through the services' own client (its codec options)."""
    db = database(settings.mongo, mongo_db.name, appname="it-rollouts")
    yield db
    db.client.close()


async def test_the_gateway_records_production_and_rollout_by_their_numbers(
    db: AsyncIOMotorDatabase[Any],
) -> None:
    states = MongoServingStateStore(db)

    assert await states.state(MODEL) == ServingState()
    assert await states.set_rollout(rollout(2)) == ServingState(None, rollout(2))
    assert await states.set_production(deployed(1, sequence=1)) == ServingState(
        deployed(1, sequence=1), rollout(2)
    ), "an earlier production move leaves the later rollout"
    assert (await states.set_rollout(rollout(1))).rollout == rollout(2), "collides: kept out"
    assert (await states.set_rollout(rollout(2, share=50.0))).rollout == rollout(2)
    assert (await states.set_rollout(rollout(3, share=25.0))).rollout == rollout(3, share=25.0)
    assert await states.set_production(deployed(5, sequence=2)) == ServingState(
        deployed(5, sequence=2), rollout(3, share=25.0)
    )
    later = await states.set_production(deployed(2, sequence=4))
    assert later == ServingState(deployed(2, sequence=4), None)
    stored = await db.serving_state.find_one({"_id": MODEL})
    assert stored is not None
    assert "rollout" not in stored
    assert "rollout_sequence" not in stored
    assert (await states.set_rollout(rollout(3))).rollout is None, "replayed: stays ended"
    assert (await states.set_production(deployed(1, sequence=3))).production == deployed(
        2, sequence=4
    ), "a late production move collides and is kept out"
    assert await MongoServingStateStore(db).state(MODEL) == later, "a new instance reads it"


async def test_the_gateway_takes_a_record_from_before_moves_were_numbered_as_older(
    db: AsyncIOMotorDatabase[Any],
) -> None:
    await db.serving_state.insert_one(
        {"_id": MODEL, "triton_model": MODEL, "version": 1, "changed_at": START, "cause": "old"}
    )
    states = MongoServingStateStore(db)

    assert (await states.state(MODEL)).production == replace(
        deployed(1), cause="old", threshold=0.5, frame_size=0
    )
    assert (await states.set_rollout(rollout(1))).rollout == rollout(1)
    assert (await states.set_production(deployed(2, sequence=2))) == ServingState(
        deployed(2, sequence=2), None
    )


@pytest.fixture
async def h(db: AsyncIOMotorDatabase[Any], tmp_path: Path) -> Harness:
    """The registry service on a fake Triton and object store but the real MongoRegistryStore,
    under a canary policy: version 1 serves, version 2's rollout runs at its first step."""
    store = MongoRegistryStore(db, history_limit=3)
    await store.ensure_indexes()
    repository = tmp_path / "repository"
    objects = FakeObjects()
    triton = FakeTriton(repository)
    sent = RecordingBus("registry")
    service = RegistryService(
        store,
        Placement(objects, triton, Deployment(repository=repository, keep_versions=3)),
        sent.publish,
        rollouts=RolloutPolicies({"screws": CANARY}),
    )
    # Only the service and the alias reads touch the store: the Mongo one stands in.
    h = Harness(service, cast(FakeStore, store), objects, triton, sent, repository)
    await h.deploy("run-a", "run-b")
    return h


async def change(h: Harness, kind: RolloutChangeKind, **expected: Any) -> Any:
    return await h.service.change_rollout(
        h.model, kind, actor="ana", reason=f"{kind}", request_id=new_id(), **expected
    )


def changes(h: Harness) -> list[tuple[str, int, float, int]]:
    return [
        (e.payload.change, e.payload.step, e.payload.share, e.payload.sequence)
        for e in h.sent.of(ModelRolloutChanged)
    ]


async def test_the_registry_completes_a_canary_in_one_update_of_production(h: Harness) -> None:
    request = new_id()
    first = await h.service.change_rollout(
        h.model, RolloutChangeKind.ADVANCED, actor="ana", reason="r", request_id=request
    )
    again = await h.service.change_rollout(
        h.model, RolloutChangeKind.ADVANCED, actor="ana", reason="r", request_id=request
    )
    racing = await asyncio.gather(
        *(change(h, RolloutChangeKind.ADVANCED, expect_step=1) for _ in range(3)),
        return_exceptions=True,
    )
    done = await change(h, RolloutChangeKind.ADVANCED, rollout_id="v2-2")

    assert again == first, "a retry answers the first call's change"
    assert sum(not isinstance(r, BaseException) for r in racing) == 1, "one compare-and-set won"
    assert all(isinstance(r, FailedPreconditionError) for r in racing if isinstance(r, Exception))
    assert done.change.kind is RolloutChangeKind.COMPLETED
    assert await h.production() == 2
    assert changes(h) == [
        ("started", 0, 5.0, 2),
        ("advanced", 1, 25.0, 3),
        ("advanced", 2, 100.0, 4),
        ("completed", 2, 0.0, 6),
    ]
    deployed_event = h.sent.of(ModelDeployed)[-1].payload
    assert (deployed_event.version, deployed_event.sequence) == (2, 5)
    alias = await h.store.get_alias(h.model, "production")
    assert alias is not None
    assert (alias.version, alias.sequence, alias.history[-1].kind) == (2, 6, MoveKind.ROLLOUT)
    assert alias.rollout == replace(done.rollout, changes=done.rollout.changes[-3:])
    assert alias.pending == (), "every announcement was sent and taken out of the outbox"
    back = await h.service.rollback(h.model, actor="bo", reason="r", request_id=new_id())
    assert (back.move.to_version, back.move.sequence) == (1, 7)


async def test_the_registry_aborts_a_canary_and_production_stays(h: Harness) -> None:
    await change(h, RolloutChangeKind.PAUSED)
    await change(h, RolloutChangeKind.RESUMED)

    aborted = await change(h, RolloutChangeKind.ABORTED)

    assert (aborted.rollout.state, aborted.rollout.share) == (RolloutState.ABORTED, 0.0)
    assert await h.production() == 1
    assert h.present() == [1]
    assert [c[0] for c in changes(h)] == ["started", "paused", "resumed", "aborted"]
    read = await h.service.rollout(h.model)
    assert (read.state, read.id, read.changes[-1].reason) == (
        RolloutState.ABORTED,
        "v2-2",
        "aborted",
    )
