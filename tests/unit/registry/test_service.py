"""The registry's core on fakes: numbering, idempotent approvals, the alias and its history,
rollbacks, failed deployments and what stays in Triton's repository."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from screwops_bus import outbox
from screwops_contracts import ModelDeployed, ModelRolledBack
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import ModelKind
from screwops_errors import (
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from screwops_registry.placement import triton_prefix
from screwops_registry.service import AliasChange, Stage
from screwops_registry.store import MoveKind, VersionStatus
from screwops_serving import config_frame_size

from tests.fakes import BROKEN, FakeObjects, relayed
from tests.support import FRAME_SIZE, eventually
from tests.unit.registry.fakes import FakeStore, Harness, harness, new_id, wipe


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return harness(tmp_path / "repository")


async def test_an_approval_becomes_the_checked_production_version(h: Harness) -> None:
    approval = h.approval("run-a")

    await h.service.on_approved(approval)

    record = await h.store.get_version(h.model, 1)
    assert record is not None
    assert (record.run_id, record.evaluation_id, record.status) == (
        "run-a",
        "eval-run-a",
        VersionStatus.DEPLOYED,
    )
    assert (record.dataset_id, record.dataset_version) == ("screws", 3)
    assert record.report_key == "evaluations/eval-run-a.json"
    assert record.correlation_id == approval.correlation_id
    assert await h.production() == 1
    assert set(h.triton.loaded[h.model]) == {1}
    assert h.objects.keys(Bucket.MODELS, triton_prefix(h.model, 1)), (
        "the Triton files are kept in MinIO"
    )
    [deployed] = h.sent.of(ModelDeployed)
    assert deployed.causation_id == approval.event_id
    assert deployed.payload.model_dump() == {
        "model_name": h.model,
        "version": 1,
        "previous_version": None,
        "triton_model": h.model,
        "run_id": "run-a",
        "threshold": 0.4,
        "model_kind": ModelKind.SUPERVISED,
        "frame_size": FRAME_SIZE,
        "sequence": 1,
    }
    assert (record.threshold, record.model_kind) == (0.4, ModelKind.SUPERVISED)
    assert record.frame_size == FRAME_SIZE


async def test_a_version_from_before_frame_input_is_never_deployed_and_says_to_retrain(
    h: Harness,
) -> None:
    await h.service.on_approved(h.approval("run-old", frame_size=0))

    record = await h.store.get_version(h.model, 1)
    assert record is not None
    assert record.status is VersionStatus.FAILED
    assert "retrain" in record.failure_reason
    assert h.present() == [], "nothing is placed in Triton"
    assert not h.sent.of(ModelDeployed)


async def test_a_version_of_another_frame_size_than_the_served_ones_is_refused(
    h: Harness,
) -> None:
    """Triton's config, frame size among it, is the name's: placing the bigger version would
    rewrite it under production."""
    await h.deploy("run-a")

    await h.service.on_approved(h.approval("run-big", frame_size=2 * FRAME_SIZE))

    record = await h.store.get_version(h.model, 2)
    assert record is not None
    assert record.status is VersionStatus.FAILED
    assert record.failure_reason == (
        f"{record.id} takes frames of {2 * FRAME_SIZE} px, but versions 1 of {h.model} in "
        f"Triton take {FRAME_SIZE} px, and Triton's config (the frame size among it) is one for "
        "every version of a name: placing it would break them. Serve it under another model "
        f"name, or retrain it at {FRAME_SIZE} px (the trainer's SCREWOPS_TRAINER_FRAME_SIZE)"
    )
    assert h.present() == [1], "nothing is placed in Triton"
    assert config_frame_size(h.repository, name=h.model) == FRAME_SIZE
    assert await h.production() == 1
    assert [e.payload.version for e in h.sent.of(ModelDeployed)] == [1]


async def test_versions_are_numbered_per_model_one_per_run(h: Harness) -> None:
    await h.deploy("run-a", "run-b")
    again = h.approval("run-a")  # a second evaluation of the same run
    await h.service.on_approved(again)

    assert sorted(h.store.versions) == [f"{h.model}@v1", f"{h.model}@v2"]
    assert [e.payload.version for e in h.sent.of(ModelDeployed)] == [1, 2, 1]
    assert [e.payload.previous_version for e in h.sent.of(ModelDeployed)] == [None, 1, 2]


async def test_racing_registrars_never_share_a_number(tmp_path: Path) -> None:
    """Two registry processes on one database: the unique keys decide, the loser retries."""
    store, objects = FakeStore(), FakeObjects()
    first = harness(tmp_path / "a", store=store, objects=objects)
    second = harness(tmp_path / "b", store=store, objects=objects)

    await asyncio.gather(
        first.service.on_approved(first.approval("run-a")),
        second.service.on_approved(second.approval("run-b")),
    )

    assert sorted((v.version, v.run_id) for v in store.versions.values()) in (
        [(1, "run-a"), (2, "run-b")],
        [(1, "run-b"), (2, "run-a")],
    )


async def test_a_redelivered_approval_changes_nothing_and_announces_again(h: Harness) -> None:
    approval = h.approval("run-a")
    await h.service.on_approved(approval)
    await h.service.on_approved(approval)

    alias = await h.store.get_alias(h.model, "production")
    assert alias is not None
    assert len(alias.history) == 1
    first, second = h.sent.of(ModelDeployed)
    assert first.event_id == second.event_id, "consumers keep one of the two"


async def test_a_redelivered_approval_that_production_moved_past_is_not_announced(
    h: Harness,
) -> None:
    """Re-reading model.approved from its start (a new consumer group) must not send the
    gateways back through every deployment ever made."""
    first = h.approval("run-a")
    await h.service.on_approved(first)
    await h.deploy("run-b")
    await h.service.rollback(
        h.model, request_id=new_id(), actor="ana@plant-7", reason="false rejects on line 2"
    )
    await h.deploy("run-c")
    announced = len(h.sent.of(ModelDeployed))

    await h.service.on_approved(first)

    assert len(h.sent.of(ModelDeployed)) == announced
    assert await h.production() == 3
    record = await h.store.get_version(h.model, 1)
    assert record is not None
    assert record.status is VersionStatus.DEPLOYED


async def test_a_deployment_kafka_refused_is_announced_by_the_relay(h: Harness) -> None:
    """Issue 18, finding 3: the alias moves and its model.deployed, refused at that moment,
    goes out once Kafka answers, without a redelivery or a restart."""
    await h.deploy("run-a")
    approval = h.approval("run-b")
    h.sent.failures.append(UnavailableError("Kafka did not answer"))

    await h.service.on_approved(approval)

    assert await h.production() == 2
    assert len(h.sent.of(ModelDeployed)) == 1
    await relayed(h.store, h.sent, 2)
    [*_, deployed] = h.sent.of(ModelDeployed)
    assert (deployed.payload.version, deployed.payload.previous_version) == (2, 1)
    assert deployed.causation_id == approval.event_id
    alias = await h.store.get_alias(h.model, "production")
    assert alias is not None
    assert [m.to_version for m in alias.history] == [1, 2]
    # A redelivery of the approval announces the same event again.
    await h.service.on_approved(approval)
    assert h.sent.of(ModelDeployed)[-1].event_id == deployed.event_id


@pytest.mark.parametrize("move", ["promote", "rollback"])
async def test_a_move_kafka_refused_is_announced_by_the_relay_and_its_retry_moves_nothing(
    h: Harness, move: str
) -> None:
    """Issue 18, finding 3, as reproduced: Kafka away when the operator moves production. The
    move stands; the operator's retry (same request id) answers it instead of moving again
    (before, it rolled back a second time: v1); the relay announces it once Kafka is back."""
    await h.deploy("run-a", "run-b", "run-c")
    h.sent.down = True
    request = new_id()

    async def call() -> AliasChange:
        if move == "promote":
            return await h.service.promote(h.model, 2, actor="bo", reason="r", request_id=request)
        return await h.service.rollback(h.model, actor="bo", reason="r", request_id=request)

    first = await call()
    retried = await call()

    assert retried == first
    assert (first.move.from_version, first.move.to_version) == (3, 2)
    assert await h.production() == 2
    alias = await h.store.get_alias(h.model, "production")
    assert alias is not None
    assert len(alias.history) == 4, "moved once"
    assert not h.sent.of(ModelRolledBack)
    assert len(h.sent) == 3
    [pending] = alias.pending
    h.sent.down = False
    await relayed(h.store, h.sent, 4)
    announced = h.sent[-1]
    assert announced == pending.event
    assert isinstance(announced, ModelRolledBack if move == "rollback" else ModelDeployed)
    assert announced.payload.sequence == first.move.sequence == 4


async def test_a_move_while_kafka_stalls_answers_and_leaves_its_event_to_the_relay(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka away: the producer holds the send, and the promotion with it, past its caller's
    deadline; the move is left pending instead."""
    monkeypatch.setattr(outbox, "PUBLISH_NOW_S", 0.05)
    await h.deploy("run-a", "run-b")
    h.sent.gate = asyncio.Event()

    change = await asyncio.wait_for(
        h.service.promote(h.model, 1, actor="bo", reason="r", request_id=new_id()), 1
    )

    assert await h.production() == 1
    h.sent.gate.set()
    await relayed(h.store, h.sent, 3)
    announced = h.sent[-1]
    assert isinstance(announced, ModelDeployed)
    assert announced.payload.sequence == change.move.sequence


async def test_racing_retries_of_one_request_move_once(h: Harness) -> None:
    """The client's deadline passed and it retried while the first call still ran."""
    await h.deploy("run-a", "run-b", "run-c")
    request = new_id()

    changes = await asyncio.gather(
        *(h.service.rollback(h.model, actor="bo", reason="r", request_id=request) for _ in range(3))
    )

    assert {c.move for c in changes} == {changes[0].move}
    assert await h.production() == 2
    assert len(h.sent.of(ModelRolledBack)) == 1


async def test_a_move_from_another_version_than_expected_is_refused(h: Harness) -> None:
    await h.deploy("run-a", "run-b")

    with pytest.raises(FailedPreconditionError, match="not 1 as expected"):
        await h.service.rollback(
            h.model, actor="bo", reason="r", request_id=new_id(), expect_version=1
        )
    with pytest.raises(FailedPreconditionError, match="not 1 as expected"):
        await h.service.promote(
            h.model, 1, actor="bo", reason="r", request_id=new_id(), expect_version=1
        )
    assert await h.production() == 2
    assert not h.sent.of(ModelRolledBack)

    change = await h.service.promote(
        h.model, 1, actor="bo", reason="r", request_id=new_id(), expect_version=2
    )
    assert change.move.to_version == 1


async def test_a_move_needs_a_request_id(h: Harness) -> None:
    await h.deploy("run-a", "run-b")

    with pytest.raises(InvalidInputError, match="request_id"):
        await h.service.rollback(h.model, actor="bo", reason="r", request_id=" ")
    with pytest.raises(InvalidInputError, match="request_id"):
        await h.service.promote(h.model, 1, actor="bo", reason="r", request_id="")


async def test_every_move_is_numbered_by_the_registry(h: Harness) -> None:
    await h.deploy("run-a", "run-b")
    await h.service.rollback(h.model, actor="ana", reason="r", request_id=new_id())
    await h.service.promote(h.model, 2, actor="ana", reason="r", request_id=new_id())

    alias = await h.store.get_alias(h.model, "production")
    assert alias is not None
    assert [m.sequence for m in alias.history] == [1, 2, 3, 4]
    assert alias.sequence == 4
    assert [e.payload.sequence for e in h.sent] == [1, 2, 3, 4]


async def test_every_move_of_the_alias_is_recorded(h: Harness) -> None:
    await h.deploy("run-a", "run-b")
    await h.service.rollback(
        h.model, request_id=new_id(), actor="ana@plant-7", reason="false rejects on line 2"
    )

    alias = await h.store.get_alias(h.model, "production")
    assert alias is not None
    assert [(m.from_version, m.to_version, m.kind) for m in alias.history] == [
        (None, 1, MoveKind.DEPLOY),
        (1, 2, MoveKind.DEPLOY),
        (2, 1, MoveKind.ROLLBACK),
    ]
    deploy, _, rollback = alias.history
    assert (deploy.actor, deploy.reason) == ("evaluator", "approved by evaluation eval-run-a")
    assert (rollback.actor, rollback.reason) == ("ana@plant-7", "false rejects on line 2")
    assert deploy.at <= rollback.at


async def test_the_history_keeps_the_newest_moves_and_recognises_their_retries(
    tmp_path: Path,
) -> None:
    """The alias document stays bounded however often production moves; rollbacks and retried
    requests work within the moves kept, and a retry older than them is a new request, which
    the expected version it carries refuses."""
    h = harness(tmp_path / "repository", store=FakeStore(history_limit=2))
    await h.deploy("run-a", "run-b", "run-c")
    old = new_id()
    await h.service.promote(h.model, 2, actor="bo", reason="r", request_id=old, expect_version=3)
    await h.service.promote(h.model, 3, actor="bo", reason="r", request_id=new_id())
    recent = new_id()
    change = await h.service.promote(h.model, 2, actor="bo", reason="r", request_id=recent)

    alias = await h.store.get_alias(h.model, "production")
    assert alias is not None
    assert ([m.sequence for m in alias.history], alias.sequence) == ([5, 6], 6)
    assert await h.service.promote(h.model, 2, actor="bo", reason="r", request_id=recent) == (
        change
    )
    with pytest.raises(FailedPreconditionError, match="not 3 as expected"):
        await h.service.promote(
            h.model, 2, actor="bo", reason="r", request_id=old, expect_version=3
        )
    back = await h.service.rollback(h.model, actor="bo", reason="r", request_id=new_id())
    assert (back.move.from_version, back.move.to_version, back.move.sequence) == (2, 3, 7)
    alias = await h.store.get_alias(h.model, "production")
    assert alias is not None
    assert [m.sequence for m in alias.history] == [6, 7]


async def test_rollback_moves_only_the_alias_and_announces_it(h: Harness) -> None:
    await h.service.on_approved(h.approval("run-a", threshold=0.3, kind=ModelKind.GOOD_ONLY))
    await h.service.on_approved(h.approval("run-b", threshold=0.6))
    loads = len(h.triton.loads)

    change = await h.service.rollback(h.model, request_id=new_id(), actor="ana", reason="drift")

    assert (change.move.from_version, change.move.to_version) == (2, 1)
    assert await h.production() == 1
    assert len(h.triton.loads) == loads, "version 1 was still loaded: nothing to load"
    [rolled_back] = h.sent.of(ModelRolledBack)
    assert rolled_back.producer == "registry"
    assert rolled_back.causation_id is None
    assert rolled_back.payload.model_dump() == {
        "model_name": h.model,
        "from_version": 2,
        "to_version": 1,
        "triton_model": h.model,
        "actor": "ana",
        "reason": "drift",
        # The version serving again brings its own operating point back with it.
        "threshold": 0.3,
        "model_kind": ModelKind.GOOD_ONLY,
        "frame_size": FRAME_SIZE,
        "sequence": 3,
    }


async def test_rollbacks_walk_back_through_promotions(h: Harness) -> None:
    await h.deploy("run-a", "run-b", "run-c")

    await h.service.rollback(h.model, request_id=new_id(), actor="ana", reason="r")
    await h.service.rollback(h.model, request_id=new_id(), actor="ana", reason="r")
    assert await h.production() == 1
    with pytest.raises(FailedPreconditionError, match="no earlier version"):
        await h.service.rollback(h.model, request_id=new_id(), actor="ana", reason="r")


async def test_rollback_with_nothing_to_return_to_is_refused(h: Harness) -> None:
    with pytest.raises(NotFoundError):
        await h.service.rollback(h.model, request_id=new_id(), actor="ana", reason="r")
    await h.deploy("run-a")
    with pytest.raises(FailedPreconditionError):
        await h.service.rollback(h.model, request_id=new_id(), actor="ana", reason="r")
    assert h.sent.of(ModelRolledBack) == []


async def test_a_broken_artifact_is_failed_and_the_old_version_keeps_serving(h: Harness) -> None:
    await h.deploy("run-a")

    await h.service.on_approved(h.approval("run-b", graph=BROKEN + b" bytes"))

    record = await h.store.get_version(h.model, 2)
    assert record is not None
    assert record.status is VersionStatus.FAILED
    assert "version 2 failed to load" in record.failure_reason
    assert await h.production() == 1
    assert h.present() == [1], "the broken version left the repository"
    assert set(h.triton.loaded[h.model]) == {1}
    assert [e.payload.version for e in h.sent.of(ModelDeployed)] == [1]
    assert not h.objects.keys(Bucket.MODELS, triton_prefix(h.model, 2))


async def test_a_failed_first_version_leaves_nothing_loaded(h: Harness) -> None:
    await h.service.on_approved(h.approval("run-a", graph=BROKEN))

    assert await h.production() is None
    assert h.present() == []
    assert h.model not in h.triton.loaded
    assert h.sent == []


async def test_a_missing_artifact_fails_the_version(h: Harness) -> None:
    approval = h.approval("run-a")
    h.objects.objects.clear()

    await h.service.on_approved(approval)

    record = await h.store.get_version(h.model, 1)
    assert record is not None
    assert record.status is VersionStatus.FAILED
    assert "nothing stored" in record.failure_reason


async def test_triton_down_is_retried_later_with_nothing_marked(h: Harness) -> None:
    approval = h.approval("run-a")
    h.triton.down = True
    with pytest.raises(UnavailableError):
        await h.service.on_approved(approval)
    record = await h.store.get_version(h.model, 1)
    assert record is not None
    assert record.status is VersionStatus.REGISTERED
    assert await h.production() is None

    h.triton.down = False
    await h.service.on_approved(approval)
    assert await h.production() == 1


async def test_only_the_newest_versions_production_and_the_rollback_target_stay(
    tmp_path: Path,
) -> None:
    h = harness(tmp_path / "repository", keep_versions=2)
    await h.deploy("run-1", "run-2", "run-3", "run-4")
    assert h.present() == [3, 4]
    assert set(h.triton.loaded[h.model]) == {3, 4}

    await h.service.rollback(h.model, request_id=new_id(), actor="ana", reason="r")  # 4 -> 3
    await h.service.rollback(
        h.model, request_id=new_id(), actor="ana", reason="r"
    )  # 3 -> 2, restored from MinIO
    assert await h.production() == 2
    assert h.present() == [2, 3, 4], "production 2 is back beside the newest two"

    h = harness(tmp_path / "single", keep_versions=1)
    await h.deploy("run-1", "run-2", "run-3")
    assert h.present() == [2, 3], "the newest one, plus the rollback target"


async def test_promote_brings_an_evicted_version_back_from_object_storage(
    tmp_path: Path,
) -> None:
    h = harness(tmp_path / "repository", keep_versions=1)
    await h.deploy("run-1", "run-2", "run-3")
    assert 1 not in h.present()

    change = await h.service.promote(
        h.model, 1, request_id=new_id(), actor="bo", reason="v1 was better on line 3"
    )

    assert (change.move.from_version, change.move.to_version) == (3, 1)
    assert change.move.kind is MoveKind.PROMOTE
    assert 1 in h.triton.loaded[h.model]
    assert await h.production() == 1
    deployed = h.sent.of(ModelDeployed)[-1]
    assert (deployed.payload.version, deployed.payload.previous_version) == (1, 3)
    assert deployed.causation_id is None


async def test_promote_refuses_what_cannot_serve(h: Harness) -> None:
    await h.deploy("run-a")
    await h.service.on_approved(h.approval("run-b", graph=BROKEN))

    with pytest.raises(FailedPreconditionError, match="failed"):
        await h.service.promote(h.model, 2, request_id=new_id(), actor="bo", reason="r")
    with pytest.raises(NotFoundError):
        await h.service.promote(h.model, 9, request_id=new_id(), actor="bo", reason="r")
    with pytest.raises(InvalidInputError):
        await h.service.promote(h.model, 1, request_id=new_id(), actor=" ", reason="r")
    with pytest.raises(InvalidInputError):
        await h.service.promote(h.model, 1, request_id=new_id(), actor="bo", reason="")
    assert await h.production() == 1


async def test_promoting_the_production_version_only_announces_it_again(h: Harness) -> None:
    await h.deploy("run-a", "run-b")
    await h.service.promote(h.model, 1, request_id=new_id(), actor="bo", reason="r")

    first = await h.service.promote(
        h.model, 1, request_id=new_id(), actor="bo", reason="retried call"
    )

    assert first.move.reason == "r"
    alias = await h.store.get_alias(h.model, "production")
    assert alias is not None
    assert len(alias.history) == 3
    promoted, again = h.sent.of(ModelDeployed)[-2:]
    assert promoted.event_id == again.event_id, "the same move, the same event"


async def test_promoting_the_production_version_with_kafka_away_leaves_it_to_the_relay(
    h: Harness,
) -> None:
    """The repeated announcement goes through the outbox like the move's own: the call answers
    (a plain publish raised, or waited while the producer held the send) and the relay
    publishes the same event once Kafka is back."""
    await h.deploy("run-a", "run-b")
    await h.service.promote(h.model, 1, request_id=new_id(), actor="bo", reason="r")
    [*_, promoted] = h.sent.of(ModelDeployed)
    h.sent.down = True

    change = await h.service.promote(h.model, 1, request_id=new_id(), actor="bo", reason="again")

    assert change.move.to_version == 1
    alias = await h.store.get_alias(h.model, "production")
    assert alias is not None
    [pending] = alias.pending
    assert pending.event.event_id == promoted.event_id
    h.sent.down = False
    await relayed(h.store, h.sent, len(h.sent) + 1)
    assert h.sent[-1].event_id == promoted.event_id


async def test_a_redelivered_approval_with_kafka_away_is_announced_by_the_relay(
    h: Harness,
) -> None:
    approval = h.approval("run-a")
    await h.service.on_approved(approval)
    [deployed] = h.sent.of(ModelDeployed)
    h.sent.down = True

    await h.service.on_approved(approval)

    h.sent.down = False
    await relayed(h.store, h.sent, 2)
    assert [e.event_id for e in h.sent.of(ModelDeployed)] == [deployed.event_id] * 2


async def test_restore_puts_production_back_after_the_repository_is_lost(h: Harness) -> None:
    await h.deploy("run-a", "run-b")
    wipe(h.repository)
    h.triton.loaded.clear()

    await h.service.restore()

    assert h.present() == [1, 2]
    assert set(h.triton.loaded[h.model]) == {1, 2}


async def test_a_production_version_from_before_frames_is_not_retried_every_round(
    h: Harness,
) -> None:
    await h.deploy("run-a", "run-b")
    # Both versions as a stack home from before frame input holds them: no frame size.
    for key, record in list(h.store.versions.items()):
        h.store.versions[key] = replace(record, frame_size=0)
    h.triton.loaded.clear()

    assert await h.service._not_served() == []


async def test_a_rejection_is_recorded_and_nothing_is_emitted(h: Harness) -> None:
    rejected = h.rejection("run-x")
    await h.service.on_rejected(rejected)
    await h.service.on_rejected(rejected)

    [rejection] = h.store.rejections.values()
    assert (rejection.run_id, rejection.evaluation_id) == ("run-x", "eval-run-x")
    assert rejection.checks[0].passed is False
    assert h.sent == []


async def test_versions_show_their_stage(h: Harness) -> None:
    await h.deploy("run-a", "run-b")
    await h.service.on_approved(h.approval("run-c", graph=BROKEN))
    await h.service.rollback(h.model, request_id=new_id(), actor="ana", reason="r")

    views = await h.service.versions(h.model, offset=0, limit=10)

    assert [(v.record.version, v.stage, v.aliases) for v in views] == [
        (3, Stage.FAILED, ()),
        (2, Stage.ARCHIVED, ()),
        (1, Stage.PRODUCTION, ("production",)),
    ]
    with pytest.raises(NotFoundError):
        await h.service.versions("unknown", offset=0, limit=10)
    assert (await h.service.lineage(h.model, 2)).record.run_id == "run-b"


async def test_a_triton_that_came_back_empty_is_served_production_again(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await h.deploy("run-a", "run-b")
    asked = 0
    ready = h.triton.ready

    async def counted(name: str, version: int | None = None) -> bool:
        nonlocal asked
        asked += 1
        return await ready(name, version)

    monkeypatch.setattr(h.triton, "ready", counted)
    h.triton.down = True
    watching = asyncio.create_task(h.service.keep_serving(0.01))
    try:

        async def tried_twice() -> bool | None:
            return True if asked >= 2 else None

        # Triton away: each round fails, and the watcher goes on to the next.
        await eventually(tried_twice, within=5, what="two rounds while Triton is down")
        assert not watching.done()
        h.triton.loaded.clear()  # restarted with nothing loaded
        h.triton.down = False

        async def restored() -> bool | None:
            return True if set(h.triton.loaded.get(h.model, {})) == {1, 2} else None

        await eventually(restored, within=5, what="production and its rollback target loaded")
    finally:
        watching.cancel()
