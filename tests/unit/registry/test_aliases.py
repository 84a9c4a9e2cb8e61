"""Aliases besides production and the manual release policy, on fakes: who moved what and why is
recorded and announced, the bounds hold, and under a manual policy nothing approved is served
until an operator releases it."""

from __future__ import annotations

from pathlib import Path

import pytest
from screwops_contracts import ModelAliasMoved, ModelDeployed, ModelReleased
from screwops_errors import FailedPreconditionError, InvalidInputError, NotFoundError
from screwops_registry.config import ReleasePolicies, ReleasePolicy
from screwops_registry.store import MoveKind

from tests.fakes import BROKEN
from tests.unit.registry.fakes import FakeStore, Harness, harness, new_id

MANUAL = ReleasePolicies({"screws": ReleasePolicy.MANUAL})


@pytest.fixture
async def h(tmp_path: Path) -> Harness:
    h = harness(tmp_path / "repository")
    await h.deploy("run-a", "run-b")
    return h


@pytest.fixture
async def manual(tmp_path: Path) -> Harness:
    """A manual release policy for the model, whose version 1 was released and serves."""
    h = harness(tmp_path / "repository", policies=MANUAL)
    await h.deploy("run-a")
    await h.service.release(h.model, 1, actor="ops", reason="first", request_id=new_id())
    h.sent.clear()
    return h


async def test_an_alias_is_set_unset_and_listed_with_who_why_and_when(h: Harness) -> None:
    set_id = new_id()
    made = await h.service.set_alias(
        h.model, "audit-2026", 1, actor="ana", reason="pinned for the audit", request_id=set_id
    )
    again = await h.service.set_alias(
        h.model, "audit-2026", 1, actor="ana", reason="pinned for the audit", request_id=set_id
    )
    views = await h.service.versions(h.model, offset=0, limit=9)
    unmade = await h.service.unset_alias(
        h.model, "audit-2026", actor="bo", reason="audit closed", request_id=new_id()
    )

    assert again == made, "a retry answers the first move"
    assert (made.alias, made.move.from_version, made.move.to_version) == ("audit-2026", None, 1)
    assert (made.move.actor, made.move.reason, made.move.kind) == (
        "ana",
        "pinned for the audit",
        MoveKind.SET,
    )
    assert [(v.record.version, v.aliases) for v in views] == [
        (2, ("production",)),
        (1, ("audit-2026",)),
    ]
    assert (unmade.move.from_version, unmade.move.to_version, unmade.move.actor) == (1, None, "bo")
    listed = await h.service.aliases(h.model)
    assert [(a.name, a.version) for a in listed] == [("production", 2), ("audit-2026", None)]
    assert [m.kind for m in listed[1].history] == [MoveKind.SET, MoveKind.UNSET]
    moved = [e.payload for e in h.sent.of(ModelAliasMoved)]
    assert [
        (p.alias, p.kind, p.from_version, p.to_version, p.actor, p.sequence) for p in moved
    ] == [
        ("audit-2026", "set", None, 1, "ana", 1),
        ("audit-2026", "unset", 1, None, "bo", 2),
    ]
    assert [e.payload.version for e in h.sent.of(ModelDeployed)] == [1, 2], "nothing served"
    assert not (await h.store.get_alias(h.model, "audit-2026") or listed[1]).pending


@pytest.mark.parametrize("name", ["production", "Prod", "2nd", "a b", "x" * 65, ""])
async def test_production_and_malformed_names_are_refused(h: Harness, name: str) -> None:
    with pytest.raises(InvalidInputError):
        await h.service.set_alias(h.model, name, 1, actor="ana", reason="r", request_id=new_id())
    with pytest.raises(InvalidInputError):
        await h.service.unset_alias(h.model, name, actor="ana", reason="r", request_id=new_id())

    assert h.sent.of(ModelAliasMoved) == []


async def test_an_alias_names_only_a_version_that_exists_and_did_not_fail(h: Harness) -> None:
    await h.service.on_approved(h.approval("run-c", graph=BROKEN))

    with pytest.raises(NotFoundError):
        await h.service.set_alias(h.model, "x", 9, actor="a", reason="r", request_id=new_id())
    with pytest.raises(FailedPreconditionError, match="failed"):
        await h.service.set_alias(h.model, "x", 3, actor="a", reason="r", request_id=new_id())
    with pytest.raises(NotFoundError):
        await h.service.unset_alias(h.model, "never-set", actor="a", reason="r", request_id="i")


async def test_a_model_has_as_many_named_aliases_as_the_limit(tmp_path: Path) -> None:
    h = harness(tmp_path / "repository", alias_limit=2)
    await h.deploy("run-a")

    for name in ("one", "two", "candidate"):
        await h.service.set_alias(h.model, name, 1, actor="a", reason="r", request_id=new_id())
    await h.service.set_alias(h.model, "two", 1, actor="a", reason="again", request_id=new_id())
    with pytest.raises(FailedPreconditionError, match="as many as it may"):
        await h.service.set_alias(h.model, "three", 1, actor="a", reason="r", request_id=new_id())
    await h.service.unset_alias(h.model, "one", actor="a", reason="r", request_id=new_id())
    await h.service.set_alias(h.model, "three", 1, actor="a", reason="r", request_id=new_id())

    assert [a.name for a in await h.service.aliases(h.model) if a.version] == [
        "production",
        "candidate",
        "three",
        "two",
    ]


async def test_an_aliass_history_keeps_its_newest_moves(tmp_path: Path) -> None:
    h = harness(tmp_path / "repository", store=FakeStore(history_limit=2))
    await h.deploy("run-a", "run-b")

    for version, why in ((1, "first"), (2, "second"), (1, "third")):
        await h.service.set_alias(h.model, "x", version, actor="a", reason=why, request_id=why)

    alias = await h.store.get_alias(h.model, "x")
    assert alias is not None
    assert [(m.reason, m.sequence) for m in alias.history] == [("second", 2), ("third", 3)]


async def test_under_a_manual_policy_an_approval_only_becomes_candidate(manual: Harness) -> None:
    approval = manual.approval("run-b")

    await manual.service.on_approved(approval)
    await manual.service.on_approved(approval)  # redelivered

    assert await manual.production() == 1, "version 1 keeps serving"
    assert manual.present() == [1], "nothing is placed in Triton"
    assert manual.sent.of(ModelDeployed) == []
    [nominated] = manual.sent.of(ModelAliasMoved)
    assert (nominated.payload.alias, nominated.payload.kind) == ("candidate", "nominate")
    assert (nominated.payload.to_version, nominated.payload.actor) == (2, "evaluator")
    [view] = await manual.service.versions(manual.model, offset=0, limit=1)
    assert (view.record.version, view.stage, view.aliases) == (2, "registered", ("candidate",))


async def test_a_released_candidate_is_announced_then_deployed_once(manual: Harness) -> None:
    await manual.service.on_approved(manual.approval("run-b"))
    request_id = new_id()

    change = await manual.service.release(
        manual.model, 2, actor="ana", reason="QA read the report", request_id=request_id
    )
    again = await manual.service.release(
        manual.model, 2, actor="ana", reason="QA read the report", request_id=request_id
    )

    assert again == change
    assert (change.alias, change.move.to_version, change.move.actor) == ("production", 2, "ana")
    assert await manual.production() == 2
    [released] = manual.sent.of(ModelReleased)
    assert released.payload.model_dump() == {
        "model_name": manual.model,
        "version": 2,
        "run_id": "run-b",
        "evaluation_id": "eval-run-b",
        "actor": "ana",
        "reason": "QA read the report",
        "sequence": 4,
    }, "the candidate's fourth move: nominated, released, nominated, released"
    assert [type(e).__name__ for e in manual.sent] == [
        "ModelAliasMoved",
        "ModelReleased",
        "ModelAliasMoved",
        "ModelDeployed",
    ], "released first, then the candidate cleared, then deployed"
    assert [e.payload.version for e in manual.sent.of(ModelDeployed)] == [2]
    candidate = await manual.store.get_alias(manual.model, "candidate")
    assert candidate is not None
    assert (candidate.version, candidate.history[-1].kind) == (None, MoveKind.RELEASE)


async def test_the_candidate_cannot_be_promoted_past_its_release(manual: Harness) -> None:
    await manual.service.on_approved(manual.approval("run-b"))
    manual.sent.clear()

    with pytest.raises(FailedPreconditionError, match="waiting for release"):
        await manual.service.promote(
            manual.model, 2, actor="ana", reason="skip the release", request_id=new_id()
        )

    assert await manual.production() == 1
    assert manual.present() == [1], "nothing is placed in Triton"
    assert manual.sent == []
    await manual.service.release(manual.model, 2, actor="ana", reason="QA", request_id=new_id())
    assert await manual.production() == 2, "the release serves it"


async def test_a_refused_candidate_is_recorded_and_never_served(manual: Harness) -> None:
    await manual.service.on_approved(manual.approval("run-b"))

    change = await manual.service.refuse(
        manual.model, 2, actor="bo", reason="false rejects on line 2", request_id=new_id()
    )

    assert (change.alias, change.move.from_version, change.move.to_version) == (
        "candidate",
        2,
        None,
    )
    assert (change.move.actor, change.move.reason, change.move.kind) == (
        "bo",
        "false rejects on line 2",
        MoveKind.REFUSE,
    )
    assert await manual.production() == 1
    assert manual.sent.of(ModelReleased) == []
    assert manual.sent.of(ModelAliasMoved)[-1].payload.kind == "refuse"
    with pytest.raises(FailedPreconditionError, match="not the candidate"):
        await manual.service.release(manual.model, 2, actor="a", reason="r", request_id=new_id())
    assert manual.sent.of(ModelDeployed) == []


async def test_only_the_candidate_is_released_or_refused(manual: Harness) -> None:
    await manual.service.on_approved(manual.approval("run-b"))

    for act in (manual.service.release, manual.service.refuse):
        with pytest.raises(FailedPreconditionError, match="candidate names version 2"):
            await act(manual.model, 1, actor="a", reason="r", request_id=new_id())
    with pytest.raises(NotFoundError):
        await manual.service.release(manual.model, 7, actor="a", reason="r", request_id="i")

    assert await manual.production() == 1


async def test_a_model_the_manual_policy_does_not_name_deploys_at_once(tmp_path: Path) -> None:
    h = harness(tmp_path / "repository", policies=ReleasePolicies({"other": ReleasePolicy.MANUAL}))

    await h.deploy("run-a")

    assert await h.production() == 1
    assert h.sent.of(ModelAliasMoved) == []
    assert await h.store.get_alias(h.model, "candidate") is None


def test_the_star_entry_is_every_other_models_policy() -> None:
    policies = ReleasePolicies({"*": ReleasePolicy.MANUAL, "screws": ReleasePolicy.AUTO})

    assert policies.of("screws") is ReleasePolicy.AUTO
    assert policies.of("bolts") is ReleasePolicy.MANUAL
    assert ReleasePolicies().of("bolts") is ReleasePolicy.AUTO
