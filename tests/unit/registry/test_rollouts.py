"""Canary and shadow rollouts on fakes: a version going to production is served beside it and
rolled out step by step, each change written with its announcement in one update of production
and numbered from production's own sequence; completion moves production, abort leaves it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from screwops_contracts import (
    ModelAliasMoved,
    ModelDeployed,
    ModelReleased,
    ModelRolledBack,
    ModelRolloutChanged,
)
from screwops_errors import FailedPreconditionError, InvalidInputError, NotFoundError
from screwops_registry.config import (
    ReleasePolicies,
    ReleasePolicy,
    RolloutPolicies,
    RolloutPolicy,
    RolloutStrategy,
)
from screwops_registry.service import RolloutAnswer
from screwops_registry.store import (
    MongoRegistryStore,
    MoveKind,
    RolloutChangeKind,
    RolloutState,
    VersionStatus,
    _alias,
)

from tests.fakes import relayed
from tests.unit.registry.fakes import Harness, harness, new_id, wipe

CANARY = RolloutPolicy(
    strategy=RolloutStrategy.CANARY,
    steps=(5.0, 25.0, 100.0),
    min_inspections=50,
    min_step_seconds=60.0,
    lines=("line-2",),
)
ADVANCED, PAUSED, RESUMED, ABORTED = (
    RolloutChangeKind.ADVANCED,
    RolloutChangeKind.PAUSED,
    RolloutChangeKind.RESUMED,
    RolloutChangeKind.ABORTED,
)


def canary(
    tmp_path: Path, *, policies: ReleasePolicies | None = None, keep_versions: int = 3
) -> Harness:
    return harness(
        tmp_path / "repository",
        rollouts=RolloutPolicies({"screws": CANARY}),
        policies=policies,
        keep_versions=keep_versions,
    )


@pytest.fixture
async def h(tmp_path: Path) -> Harness:
    """A canary policy for the model: version 1 serves (a first version is deployed at once),
    version 2 was approved and its rollout runs at its first step."""
    h = canary(tmp_path)
    await h.deploy("run-a", "run-b")
    return h


async def change(
    h: Harness,
    kind: RolloutChangeKind,
    *,
    request_id: str = "",
    rollout_id: str = "",
    expect_step: int | None = None,
) -> RolloutAnswer:
    return await h.service.change_rollout(
        h.model,
        kind,
        actor="ana",
        reason=f"{kind} by hand",
        request_id=request_id or new_id(),
        rollout_id=rollout_id,
        expect_step=expect_step,
    )


def changes(h: Harness) -> list[tuple[str, str, int, float, int]]:
    return [
        (e.payload.change, e.payload.state, e.payload.step, e.payload.share, e.payload.sequence)
        for e in h.sent.of(ModelRolloutChanged)
    ]


async def test_an_approval_starts_a_canary_beside_production(h: Harness) -> None:
    rollout = await h.service.rollout(h.model)

    assert await h.production() == 1, "production stays until the rollout completes"
    assert h.present() == [1, 2]
    assert set(h.triton.loaded[h.model]) == {1, 2}
    assert h.store.versions[f"{h.model}@v2"].status is VersionStatus.DEPLOYED
    assert (rollout.state, rollout.step, rollout.share) == (RolloutState.RUNNING, 0, 5.0)
    assert (rollout.production, rollout.candidate, rollout.id) == (1, 2, "v2-2")
    assert [e.payload.version for e in h.sent.of(ModelDeployed)] == [1]
    [started] = h.sent.of(ModelRolloutChanged)
    payload = started.payload
    assert payload.model_dump(exclude={"production", "candidate"}) == {
        "model_name": h.model,
        "rollout_id": "v2-2",
        "change": "started",
        "state": "running",
        "strategy": "canary",
        "steps": [5.0, 25.0, 100.0],
        "step": 0,
        "share": 5.0,
        "lines": ["line-2"],
        "min_inspections": 50,
        "min_step_seconds": 60.0,
        "actor": "evaluator",
        "reason": "approved by evaluation eval-run-b",
        "sequence": 2,
    }, "numbered after production's first move"
    assert (payload.production.version, payload.candidate.version) == (1, 2)
    assert payload.candidate.threshold == 0.4
    assert payload.candidate.triton_model == h.model
    assert started.causation_id is not None, "caused by the approval"


async def test_a_canary_advances_step_by_step_and_completes_as_a_production_move(
    h: Harness,
) -> None:
    first = await change(h, ADVANCED)
    second = await change(h, ADVANCED, expect_step=1)
    done = await change(h, ADVANCED, rollout_id="v2-2")

    assert [first.rollout.share, second.rollout.share, done.rollout.share] == [25.0, 100.0, 0.0]
    assert done.change.kind is RolloutChangeKind.COMPLETED
    assert done.rollout.state is RolloutState.COMPLETED
    assert await h.production() == 2
    assert changes(h) == [
        ("started", "running", 0, 5.0, 2),
        ("advanced", "running", 1, 25.0, 3),
        ("advanced", "running", 2, 100.0, 4),
        ("completed", "completed", 2, 0.0, 6),
    ]
    deployed = h.sent.of(ModelDeployed)[-1].payload
    assert (deployed.version, deployed.previous_version, deployed.sequence) == (2, 1, 5)
    assert [type(e).__name__ for e in h.sent[-2:]] == ["ModelDeployed", "ModelRolloutChanged"]
    alias = await h.store.get_alias(h.model, "production")
    assert alias is not None
    assert (alias.history[-1].kind, alias.history[-1].actor, alias.sequence) == (
        MoveKind.ROLLOUT,
        "ana",
        6,
    )
    assert h.store.rollout_writes == 4, "the completion moved production in the same update"
    # Production's next move follows the rollout's numbers, and rolls back past it.
    back = await h.service.rollback(h.model, actor="bo", reason="r", request_id=new_id())
    assert (back.move.to_version, back.move.sequence) == (1, 7)
    assert h.sent.of(ModelRolledBack)[-1].payload.sequence == 7


async def test_a_step_and_its_minimum_time_start_again_on_advance_and_resume(
    h: Harness,
) -> None:
    started = await h.service.rollout(h.model)
    advanced = await change(h, ADVANCED)
    paused = await change(h, PAUSED)
    resumed = await change(h, RESUMED)

    assert advanced.rollout.step_started_at >= started.step_started_at
    assert paused.rollout.step_started_at == advanced.rollout.step_started_at
    assert resumed.rollout.step_started_at == resumed.change.at


async def test_a_paused_canary_gets_nothing_until_resumed(h: Harness) -> None:
    paused = await change(h, PAUSED)

    assert (paused.rollout.state, paused.rollout.share, paused.rollout.step) == (
        RolloutState.PAUSED,
        0.0,
        0,
    )
    for refused in (ADVANCED, PAUSED):
        with pytest.raises(FailedPreconditionError, match="is paused"):
            await change(h, refused)
    resumed = await change(h, RESUMED)
    with pytest.raises(FailedPreconditionError, match="is running"):
        await change(h, RESUMED)

    assert (resumed.rollout.state, resumed.rollout.share) == (RolloutState.RUNNING, 5.0)
    assert changes(h)[1:] == [("paused", "paused", 0, 0.0, 3), ("resumed", "running", 0, 5.0, 4)]
    assert await h.production() == 1


async def test_an_abort_returns_every_request_to_production_and_unloads_the_candidate(
    h: Harness,
) -> None:
    await change(h, ADVANCED)

    aborted = await change(h, ABORTED)

    assert (aborted.rollout.state, aborted.rollout.share) == (RolloutState.ABORTED, 0.0)
    assert await h.production() == 1
    assert h.present() == [1]
    assert changes(h)[-1] == ("aborted", "aborted", 1, 0.0, 4)
    assert [e.payload.version for e in h.sent.of(ModelDeployed)] == [1], "production stays"
    for after in (ADVANCED, PAUSED, RESUMED, ABORTED):
        with pytest.raises(FailedPreconditionError, match="is aborted; nothing runs"):
            await change(h, after)
    # It may be rolled out again, from the copy kept in object storage.
    again = await h.service.start_rollout(
        h.model, 2, actor="ana", reason="retry", request_id=new_id()
    )
    assert (again.rollout.id, again.rollout.state) == ("v2-5", RolloutState.RUNNING)
    assert h.present() == [1, 2]


async def test_an_aborted_candidate_an_alias_names_stays_in_triton(h: Harness) -> None:
    await h.service.set_alias(h.model, "keep", 2, actor="ana", reason="r", request_id=new_id())

    await change(h, ABORTED)

    assert h.present() == [1, 2]


async def test_a_retried_request_changes_the_rollout_once(h: Harness) -> None:
    request = new_id()

    first = await change(h, ADVANCED, request_id=request)
    again = await change(h, ADVANCED, request_id=request)
    racing = await asyncio.gather(*(change(h, PAUSED, request_id="p") for _ in range(3)))

    assert again == first
    assert {r.change for r in racing} == {racing[0].change}
    rollout = await h.service.rollout(h.model)
    assert (rollout.step, rollout.state) == (1, RolloutState.PAUSED)
    assert [c[0] for c in changes(h)] == ["started", "advanced", "paused"]


async def test_a_retried_start_answers_the_first(tmp_path: Path) -> None:
    h = harness(tmp_path / "repository")
    await h.deploy("run-a", "run-b")
    await h.service.promote(h.model, 1, actor="ana", reason="back", request_id=new_id())
    request = new_id()

    async def start() -> RolloutAnswer:
        return await h.service.start_rollout(
            h.model,
            2,
            actor="ana",
            reason="try it on 10 %",
            request_id=request,
            strategy=RolloutStrategy.SHADOW,
        )

    first = await start()
    again = await start()

    assert again == first
    assert h.store.rollout_writes == 1
    assert (first.rollout.strategy, first.rollout.steps, first.rollout.share) == (
        RolloutStrategy.SHADOW,
        (25.0,),
        25.0,
    )
    [started] = h.sent.of(ModelRolloutChanged)
    assert (started.payload.strategy, started.payload.actor) == ("shadow", "ana")
    done = await change(h, ADVANCED)
    assert done.change.kind is RolloutChangeKind.COMPLETED, "a shadow has one step"
    assert await h.production() == 2


async def test_one_rollout_at_a_time(h: Harness) -> None:
    await h.service.on_approved(h.approval("run-c"))  # only registered

    with pytest.raises(FailedPreconditionError, match="rollout v2-2 of screws version 2"):
        await h.service.start_rollout(h.model, 3, actor="a", reason="r", request_id=new_id())
    for move in (
        h.service.promote(h.model, 3, actor="a", reason="r", request_id=new_id()),
        h.service.rollback(h.model, actor="a", reason="r", request_id=new_id()),
    ):
        with pytest.raises(FailedPreconditionError, match="abort it"):
            await move

    assert await h.production() == 1
    assert h.store.versions[f"{h.model}@v3"].status is VersionStatus.REGISTERED
    assert (await h.service.rollout(h.model)).candidate == 2
    assert [c[0] for c in changes(h)] == ["started"]
    await change(h, ABORTED)
    started = await h.service.start_rollout(
        h.model, 3, actor="a", reason="next", request_id=new_id()
    )
    assert started.rollout.candidate == 3


async def test_a_start_needs_a_strategy_production_and_another_version(tmp_path: Path) -> None:
    h = harness(tmp_path / "repository", policies=ReleasePolicies({"*": ReleasePolicy.MANUAL}))
    await h.deploy("run-a")  # only candidate: nothing in production

    with pytest.raises(InvalidInputError, match="immediately"):
        await h.service.start_rollout(h.model, 1, actor="a", reason="r", request_id=new_id())
    with pytest.raises(FailedPreconditionError, match="no production version"):
        await h.service.start_rollout(
            h.model, 1, actor="a", reason="r", request_id=new_id(), strategy=RolloutStrategy.CANARY
        )
    await h.service.release(h.model, 1, actor="a", reason="r", request_id=new_id())
    with pytest.raises(FailedPreconditionError, match="production already"):
        await h.service.start_rollout(
            h.model, 1, actor="a", reason="r", request_id=new_id(), strategy=RolloutStrategy.CANARY
        )
    with pytest.raises(NotFoundError, match="never had a rollout"):
        await h.service.rollout(h.model)
    with pytest.raises(NotFoundError, match="no model"):
        await h.service.rollout("unknown")
    with pytest.raises(NotFoundError):
        await change(h, ADVANCED)
    await h.deploy("run-b")
    with pytest.raises(FailedPreconditionError, match="waiting for release"):
        await h.service.start_rollout(
            h.model, 2, actor="a", reason="r", request_id=new_id(), strategy=RolloutStrategy.CANARY
        )


async def test_a_first_version_is_deployed_at_once_and_a_redelivery_starts_nothing(
    tmp_path: Path,
) -> None:
    h = canary(tmp_path)
    await h.deploy("run-a")
    approval = h.approval("run-b")

    await h.service.on_approved(approval)
    await h.service.on_approved(approval)

    assert [e.payload.version for e in h.sent.of(ModelDeployed)] == [1]
    assert [c[0] for c in changes(h)] == ["started"]
    assert h.store.rollout_writes == 1


async def test_a_released_candidate_is_rolled_out(tmp_path: Path) -> None:
    h = canary(tmp_path, policies=ReleasePolicies({"screws": ReleasePolicy.MANUAL}))
    await h.deploy("run-a")
    await h.service.release(h.model, 1, actor="ana", reason="first", request_id=new_id())
    await h.deploy("run-b")
    request = new_id()

    released = await h.service.release(h.model, 2, actor="ana", reason="QA", request_id=request)
    again = await h.service.release(h.model, 2, actor="ana", reason="QA", request_id=request)

    assert again == released
    assert (released.alias, released.move.kind) == ("candidate", MoveKind.RELEASE)
    assert await h.production() == 1
    rollout = await h.service.rollout(h.model)
    assert (rollout.candidate, rollout.state, rollout.changes[0].actor) == (
        2,
        RolloutState.RUNNING,
        "ana",
    )
    assert [type(e).__name__ for e in h.sent[-3:]] == [
        "ModelReleased",
        "ModelAliasMoved",
        "ModelRolloutChanged",
    ]
    assert len(h.sent.of(ModelReleased)) == 2
    assert h.sent.of(ModelAliasMoved)[-1].payload.kind == "release"


async def test_restore_keeps_a_running_candidate_served(h: Harness) -> None:
    wipe(h.repository)
    h.triton.loaded.clear()

    assert await h.service._not_served() == [f"{h.model}@v1", f"{h.model}@v2"]
    await h.service.restore()

    assert h.present() == [1, 2]
    assert set(h.triton.loaded[h.model]) == {1, 2}
    await change(h, ABORTED)
    assert await h.service._not_served() == []


async def test_eviction_keeps_a_running_candidate(tmp_path: Path) -> None:
    h = canary(tmp_path, keep_versions=1)
    await h.deploy("run-a", "run-b")
    await change(h, ABORTED)
    await h.deploy("run-c")
    await h.service.set_alias(h.model, "keep", 3, actor="a", reason="r", request_id=new_id())
    await change(h, ABORTED)
    await h.service.start_rollout(h.model, 2, actor="a", reason="again", request_id=new_id())

    await h.service._evict(h.model)

    assert h.present() == [1, 2, 3], "the newest, production and the candidate"


async def test_a_change_kafka_refused_stands_and_the_relay_announces_it(h: Harness) -> None:
    h.sent.down = True
    request = new_id()

    done = await change(h, ADVANCED, request_id=request)
    await change(h, ADVANCED, request_id=request)
    alias = await h.store.get_alias(h.model, "production")

    assert alias is not None
    assert alias.rollout is not None
    assert alias.rollout.step == 1, "advanced once"
    [pending] = alias.pending
    assert isinstance(pending.event, ModelRolloutChanged)
    assert pending.event.payload.sequence == done.change.sequence == alias.sequence == 3
    h.sent.down = False
    await relayed(h.store, h.sent, 3)
    assert h.sent[-1] == pending.event


async def test_nobody_asks_for_a_start_or_a_completion_by_name(h: Harness) -> None:
    for kind in (RolloutChangeKind.STARTED, RolloutChangeKind.COMPLETED):
        with pytest.raises(InvalidInputError, match=r"not \w+ on request"):
            await change(h, kind)
    with pytest.raises(FailedPreconditionError, match="not v9-9"):
        await change(h, ADVANCED, rollout_id="v9-9")
    with pytest.raises(FailedPreconditionError, match="at step 0, not 1"):
        await change(h, ADVANCED, expect_step=1)
    with pytest.raises(InvalidInputError, match="request_id"):
        await h.service.change_rollout(h.model, ADVANCED, actor="a", reason="r", request_id="")


class RecordingAliases:
    """The ``aliases`` collection as MongoRegistryStore updates it: each update kept, and the
    document it would leave (only the fields a rollout change sets)."""

    def __init__(self) -> None:
        self.updates: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def update_one(self, query: dict[str, Any], update: dict[str, Any]) -> Any:
        self.updates.append((query, update))
        return SimpleNamespace(matched_count=1)


async def test_the_mongo_store_writes_a_completion_in_one_conditional_update(h: Harness) -> None:
    """What MongoRegistryStore sends for the completion the fake store made: one update,
    conditional on production's version and sequence, setting the rollout (its changes kept to
    the history limit), production's move and the sequence, and pushing both announcements; the
    rollout reads back from the document as written."""
    await change(h, ADVANCED)
    await change(h, ADVANCED)
    expected = await h.store.get_alias(h.model, "production")
    h.sent.down = True  # its announcements stay pending: the ones the store is handed
    done = await change(h, ADVANCED)
    after = await h.store.get_alias(h.model, "production")
    assert expected is not None
    assert after is not None
    assert after.rollout is not None
    aliases = RecordingAliases()
    store = MongoRegistryStore(cast(Any, SimpleNamespace(aliases=aliases)), history_limit=3)

    assert await store.change_rollout(
        h.model,
        expected=expected,
        rollout=done.rollout,
        announcements=after.pending,
        move=after.history[-1],
    )

    [(query, update)] = aliases.updates
    assert query == {
        "_id": f"{h.model}:production",
        "version": 1,
        "$or": [{"sequence": 4}, {"sequence": {"$exists": False}}],
    }
    written = update["$set"]
    assert (written["version"], written["sequence"]) == (2, 6)
    assert [m["to"] for m in written["history"]] == [1, 2]
    assert [c["kind"] for c in written["rollout"]["changes"]] == [
        "advanced",
        "advanced",
        "completed",
    ], "the newest changes, as many as the history keeps"
    assert [a["topic"] for a in update["$push"]["outbox"]["$each"]] == [
        "model.deployed",
        "model.rollout_changed",
    ]
    document = {
        "_id": f"{h.model}:production",
        "model_name": h.model,
        "alias": "production",
        "version": written["version"],
        "history": written["history"],
        "sequence": written["sequence"],
        "rollout": written["rollout"],
    }
    assert _alias(document).rollout == replace(done.rollout, changes=done.rollout.changes[-3:])
