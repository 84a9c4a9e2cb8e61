"""The registry servicer without a network: proto fields in, domain calls, statuses out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from pydantic import SecretStr
from screwops.v1 import registry_pb2, registry_pb2_grpc
from screwops_contracts.events import (
    ModelAliasMoved,
    ModelReleased,
    ModelRolledBack,
    ModelRolloutChanged,
)
from screwops_registry.grpc_api import ROLES, Context, RegistryApi, server
from screwops_rpc import bearer_auth, on_behalf_of, open_aio_channel
from screwops_settings import ApiToken, Role

from tests.fakes import BROKEN, AbortedError, FakeContext
from tests.unit.registry.fakes import Harness, harness, new_id

CONTEXT = cast(Context, FakeContext())


async def status_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(AbortedError) as aborted:
        await call
    return aborted.value.code


@pytest.fixture
async def h(tmp_path: Path) -> Harness:
    h = harness(tmp_path / "repository")
    await h.deploy("run-a", "run-b")
    await h.service.on_approved(h.approval("run-c", graph=BROKEN))
    return h


async def test_versions_are_listed_newest_first_with_their_lineage(h: Harness) -> None:
    api = RegistryApi(h.service)

    page = await api.ListVersions(
        registry_pb2.ListVersionsRequest(model_name=h.model, page_size=2), CONTEXT
    )
    rest = await api.ListVersions(
        registry_pb2.ListVersionsRequest(
            model_name=h.model, page_size=2, page_token=page.next_page_token
        ),
        CONTEXT,
    )

    assert [v.version for v in page.model_versions] == [3, 2]
    assert [v.version for v in rest.model_versions] == [1]
    assert rest.next_page_token == ""
    failed, production = page.model_versions
    assert failed.stage == registry_pb2.MODEL_STAGE_FAILED
    assert "failed to load" in failed.failure_reason
    assert production.stage == registry_pb2.MODEL_STAGE_PRODUCTION
    assert list(production.aliases) == ["production"]
    assert rest.model_versions[0].stage == registry_pb2.MODEL_STAGE_ARCHIVED
    assert (production.run_id, production.evaluation_id) == ("run-b", "eval-run-b")
    assert (production.dataset_id, production.dataset_version) == ("screws", 3)
    assert dict(production.metrics) == pytest.approx({"accuracy": 0.98, "threshold": 0.4})
    assert production.threshold == pytest.approx(0.4)
    assert production.model_kind == registry_pb2.MODEL_KIND_SUPERVISED
    assert production.report_key == "evaluations/eval-run-b.json"
    assert production.artifact_key == "runs/run-b/saved_model"
    assert production.created_at.seconds > 0


async def test_rollback_and_promote_return_the_alias_change(h: Harness) -> None:
    api = RegistryApi(h.service)

    back = await api.Rollback(
        registry_pb2.RollbackRequest(
            request_id=new_id(), model_name=h.model, actor="ana", reason="drift"
        ),
        CONTEXT,
    )
    forth = await api.Promote(
        registry_pb2.PromoteRequest(
            request_id=new_id(), model_name=h.model, version=2, actor="bo", reason="fixed"
        ),
        CONTEXT,
    )

    assert (back.alias, back.from_version, back.to_version) == ("production", 2, 1)
    assert (back.actor, back.reason) == ("ana", "drift")
    assert (forth.from_version, forth.to_version, forth.actor) == (1, 2, "bo")
    assert forth.changed_at.ToDatetime() >= back.changed_at.ToDatetime()


async def test_a_first_deployment_has_no_from_version(tmp_path: Path) -> None:
    h = harness(tmp_path / "repository")
    await h.deploy("run-a")
    api = RegistryApi(h.service)

    change = await api.Promote(
        registry_pb2.PromoteRequest(
            request_id=new_id(), model_name=h.model, version=1, actor="bo", reason="again"
        ),
        CONTEXT,
    )

    assert not change.HasField("from_version")
    assert change.to_version == 1


async def test_errors_become_their_status(h: Harness) -> None:
    api = RegistryApi(h.service)
    promote = registry_pb2.PromoteRequest

    assert (
        await status_of(api.ListVersions(registry_pb2.ListVersionsRequest(model_name=""), CONTEXT))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        await status_of(
            api.ListVersions(registry_pb2.ListVersionsRequest(model_name="nope"), CONTEXT)
        )
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        await status_of(
            api.ListVersions(
                registry_pb2.ListVersionsRequest(model_name=h.model, page_token="x"), CONTEXT
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        await status_of(
            api.GetLineage(registry_pb2.GetLineageRequest(model_name=h.model, version=9), CONTEXT)
        )
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        await status_of(api.GetLineage(registry_pb2.GetLineageRequest(model_name=h.model), CONTEXT))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        await status_of(
            api.Promote(
                promote(request_id=new_id(), model_name=h.model, version=3, actor="a", reason="r"),
                CONTEXT,
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert (
        await status_of(
            api.Promote(
                promote(request_id=new_id(), model_name=h.model, version=1, actor="", reason="r"),
                CONTEXT,
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        await status_of(
            api.Rollback(
                registry_pb2.RollbackRequest(
                    request_id=new_id(), model_name="nope", actor="a", reason="r"
                ),
                CONTEXT,
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    h.triton.down = True
    h.triton.loaded.clear()
    assert (
        await status_of(
            api.Rollback(
                registry_pb2.RollbackRequest(
                    request_id=new_id(), model_name=h.model, actor="a", reason="r"
                ),
                CONTEXT,
            )
        )
        == grpc.StatusCode.UNAVAILABLE
    )


@pytest.mark.parametrize(
    ("fields", "details"),
    [
        ({"actor": "a" * 129}, "actor is 129 characters, over the limit of 128"),
        ({"reason": "r" * 1025}, "reason is 1025 characters, over the limit of 1024"),
        ({"request_id": "i" * 129}, "request_id is 129 characters, over the limit of 128"),
        ({"model_name": "m" * 129}, "model_name is 129 characters, over the limit of 128"),
    ],
)
async def test_a_move_with_overlong_text_is_refused_before_the_alias_moves(
    h: Harness, fields: dict[str, Any], details: str
) -> None:
    api = RegistryApi(h.service)
    before = [view.stage for view in await h.service.versions(h.model, offset=0, limit=9)]
    request = registry_pb2.RollbackRequest(
        request_id=new_id(), model_name=h.model, actor="a", reason="r"
    )
    request.MergeFrom(registry_pb2.RollbackRequest(**fields))

    with pytest.raises(AbortedError) as aborted:
        await api.Rollback(request, CONTEXT)

    assert (aborted.value.code, aborted.value.details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        details,
    )
    after = [view.stage for view in await h.service.versions(h.model, offset=0, limit=9)]
    assert after == before


OPERATOR_TOKEN = "ops-alice-token-0123456789"
VIEWER_TOKEN = "viewer-token-0123456789abc"
CONSOLE_TOKEN = "console-token-0123456789ab"


@pytest.fixture
async def guarded(h: Harness) -> AsyncIterator[str]:
    """The registry's API over ``h`` with a token table of an operator, a viewer and the console
    (which delegates), as ``__main__`` serves it; yields its address."""
    table = [
        ApiToken(principal="ops-alice", role=Role.OPERATOR, token=SecretStr(OPERATOR_TOKEN)),
        ApiToken(principal="dash", role=Role.VIEWER, token=SecretStr(VIEWER_TOKEN)),
        ApiToken(
            principal="console",
            role=Role.OPERATOR,
            token=SecretStr(CONSOLE_TOKEN),
            delegates=True,
        ),
    ]
    running = server(h.service, host="127.0.0.1", port=0, interceptors=bearer_auth(table, ROLES))
    await running.start()
    yield f"127.0.0.1:{running.port}"
    await running.stop(grace=0)


async def test_a_move_records_the_tokens_principal_not_the_name_it_gives(
    h: Harness, guarded: str
) -> None:
    async with open_aio_channel(guarded, OPERATOR_TOKEN) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        back = await registry.Rollback(
            registry_pb2.RollbackRequest(
                request_id=new_id(), model_name=h.model, actor="mallory", reason="drift"
            ),
            timeout=5,
        )
        forth = await registry.Promote(
            registry_pb2.PromoteRequest(
                request_id=new_id(), model_name=h.model, version=2, reason="fixed"
            ),
            timeout=5,
        )

    assert (back.actor, forth.actor) == ("ops-alice", "ops-alice")
    assert [e.payload.actor for e in h.sent.of(ModelRolledBack)] == ["ops-alice"]


async def test_a_viewer_may_read_but_not_move_the_alias(h: Harness, guarded: str) -> None:
    async with open_aio_channel(guarded, VIEWER_TOKEN) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        listed = await registry.ListVersions(
            registry_pb2.ListVersionsRequest(model_name=h.model), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await registry.Rollback(
                registry_pb2.RollbackRequest(
                    request_id=new_id(), model_name=h.model, actor="dash", reason="drift"
                ),
                timeout=5,
            )

    assert len(listed.model_versions) == 3
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == "Rollback needs the operator role; dash is viewer"
    assert h.sent.of(ModelRolledBack) == []


async def test_the_console_moves_the_alias_as_its_logged_in_user(h: Harness, guarded: str) -> None:
    async with open_aio_channel(guarded, CONSOLE_TOKEN) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        back = await registry.Rollback(
            registry_pb2.RollbackRequest(
                request_id=new_id(), model_name=h.model, actor="mallory", reason="drift"
            ),
            timeout=5,
            metadata=on_behalf_of("alice", Role.OPERATOR),
        )

    assert back.actor == "alice (via console)"
    assert [e.payload.actor for e in h.sent.of(ModelRolledBack)] == ["alice (via console)"]


async def test_a_user_acting_through_the_console_keeps_the_users_role(
    h: Harness, guarded: str
) -> None:
    async with open_aio_channel(guarded, CONSOLE_TOKEN) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await registry.Rollback(
                registry_pb2.RollbackRequest(request_id=new_id(), model_name=h.model, reason="r"),
                timeout=5,
                metadata=on_behalf_of("vic", Role.VIEWER),
            )

    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == (
        "Rollback needs the operator role; vic (via console) is viewer"
    )
    assert h.sent.of(ModelRolledBack) == []


async def test_a_principal_that_does_not_delegate_cannot_act_for_someone_else(
    h: Harness, guarded: str
) -> None:
    async with open_aio_channel(guarded, OPERATOR_TOKEN) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await registry.Rollback(
                registry_pb2.RollbackRequest(request_id=new_id(), model_name=h.model, reason="r"),
                timeout=5,
                metadata=on_behalf_of("bob", Role.OPERATOR),
            )

    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == "ops-alice may not act on behalf of another user"
    assert h.sent.of(ModelRolledBack) == []


async def test_aliases_are_moved_as_the_tokens_principal_and_listed_to_a_viewer(
    h: Harness, guarded: str
) -> None:
    async with open_aio_channel(guarded, OPERATOR_TOKEN) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        made = await registry.SetAlias(
            registry_pb2.SetAliasRequest(
                request_id=new_id(),
                model_name=h.model,
                alias="audit",
                version=1,
                actor="mallory",
                reason="pinned",
            ),
            timeout=5,
        )
        unmade = await registry.UnsetAlias(
            registry_pb2.UnsetAliasRequest(
                request_id=new_id(), model_name=h.model, alias="audit", reason="done"
            ),
            timeout=5,
        )
        with pytest.raises(grpc.aio.AioRpcError) as production:
            await registry.SetAlias(
                registry_pb2.SetAliasRequest(
                    request_id=new_id(),
                    model_name=h.model,
                    alias="production",
                    version=1,
                    reason="r",
                ),
                timeout=5,
            )
    async with open_aio_channel(guarded, VIEWER_TOKEN) as channel:
        listed = await registry_pb2_grpc.RegistryServiceStub(channel).ListAliases(
            registry_pb2.ListAliasesRequest(model_name=h.model), timeout=5
        )

    assert (made.alias, made.to_version, made.actor, made.reason) == (
        "audit",
        1,
        "ops-alice",
        "pinned",
    )
    assert (unmade.from_version, unmade.HasField("to_version"), unmade.actor) == (
        1,
        False,
        "ops-alice",
    )
    assert production.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "promote" in (production.value.details() or "")
    assert [(a.alias, a.HasField("version"), a.version) for a in listed.aliases] == [
        ("production", True, 2),
        ("audit", False, 0),
    ]
    assert (listed.aliases[1].latest.actor, listed.aliases[1].latest.reason) == (
        "ops-alice",
        "done",
    )
    assert [e.payload.actor for e in h.sent.of(ModelAliasMoved)] == ["ops-alice", "ops-alice"]


@pytest.mark.parametrize("method", ["Release", "Refuse", "SetAlias", "UnsetAlias"])
async def test_a_viewer_may_not_release_refuse_or_move_an_alias(
    h: Harness, guarded: str, method: str
) -> None:
    await h.service.set_alias(h.model, "candidate", 1, actor="a", reason="r", request_id="i")
    request = {
        "Release": registry_pb2.ReleaseRequest(version=1),
        "Refuse": registry_pb2.RefuseRequest(version=1),
        "SetAlias": registry_pb2.SetAliasRequest(alias="candidate", version=2),
        "UnsetAlias": registry_pb2.UnsetAliasRequest(alias="candidate"),
    }[method]
    request.MergeFrom(type(request)(model_name=h.model, reason="r", request_id=new_id()))

    async with open_aio_channel(guarded, VIEWER_TOKEN) as channel:
        call = getattr(registry_pb2_grpc.RegistryServiceStub(channel), method)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request, timeout=5)

    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == f"{method} needs the operator role; dash is viewer"
    candidate = await h.store.get_alias(h.model, "candidate")
    assert candidate is not None
    assert (candidate.version, len(candidate.history)) == (1, 1)
    assert await h.production() == 2


async def test_the_console_releases_and_refuses_as_its_logged_in_user(
    h: Harness, guarded: str
) -> None:
    await h.service.set_alias(h.model, "candidate", 1, actor="a", reason="r", request_id="i")
    async with open_aio_channel(guarded, CONSOLE_TOKEN) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        released = await registry.Release(
            registry_pb2.ReleaseRequest(
                request_id=new_id(), model_name=h.model, version=1, actor="x", reason="ok"
            ),
            timeout=5,
            metadata=on_behalf_of("alice", Role.OPERATOR),
        )
        await h.service.set_alias(h.model, "candidate", 2, actor="a", reason="r", request_id="j")
        refused = await registry.Refuse(
            registry_pb2.RefuseRequest(
                request_id=new_id(), model_name=h.model, version=2, reason="no"
            ),
            timeout=5,
            metadata=on_behalf_of("bob", Role.OPERATOR),
        )

    assert (released.alias, released.to_version, released.actor) == (
        "production",
        1,
        "alice (via console)",
    )
    assert (refused.alias, refused.HasField("to_version"), refused.actor) == (
        "candidate",
        False,
        "bob (via console)",
    )
    assert [e.payload.actor for e in h.sent.of(ModelReleased)] == ["alice (via console)"]
    assert await h.production() == 1


def _change_request(h: Harness, **fields: Any) -> registry_pb2.ChangeRolloutRequest:
    return registry_pb2.ChangeRolloutRequest(
        model_name=h.model, actor="ana", reason="by hand", request_id=new_id(), **fields
    )


async def test_a_rollout_is_started_changed_and_shown(h: Harness) -> None:
    api = RegistryApi(h.service)

    started = await api.StartRollout(
        registry_pb2.StartRolloutRequest(
            model_name=h.model,
            version=1,
            strategy=registry_pb2.ROLLOUT_STRATEGY_CANARY,
            actor="ana",
            reason="try v1 again",
            request_id=new_id(),
        ),
        CONTEXT,
    )
    advanced = await api.AdvanceRollout(_change_request(h, expect_step=0), CONTEXT)
    paused = await api.PauseRollout(_change_request(h), CONTEXT)
    resumed = await api.ResumeRollout(_change_request(h), CONTEXT)
    aborted = await api.AbortRollout(
        _change_request(h, rollout_id=started.rollout.rollout_id), CONTEXT
    )
    shown = await api.GetRollout(registry_pb2.GetRolloutRequest(model_name=h.model), CONTEXT)

    rollout = started.rollout
    assert (rollout.rollout_id, rollout.strategy, rollout.state) == (
        "v1-3",
        registry_pb2.ROLLOUT_STRATEGY_CANARY,
        registry_pb2.ROLLOUT_STATE_RUNNING,
    )
    assert (rollout.production_version, rollout.candidate_version) == (2, 1)
    assert (list(rollout.steps), rollout.step, rollout.share) == ([5.0, 25.0, 100.0], 0, 5.0)
    assert (started.change.kind, started.change.actor, started.change.sequence) == (
        registry_pb2.ROLLOUT_CHANGE_KIND_STARTED,
        "ana",
        3,
    )
    assert (advanced.rollout.step, advanced.rollout.share) == (1, 25.0)
    assert paused.rollout.state == registry_pb2.ROLLOUT_STATE_PAUSED
    assert resumed.change.kind == registry_pb2.ROLLOUT_CHANGE_KIND_RESUMED
    assert (aborted.rollout.state, aborted.rollout.share) == (
        registry_pb2.ROLLOUT_STATE_ABORTED,
        0.0,
    )
    assert shown == aborted.rollout
    assert [c.kind for c in shown.changes] == [
        registry_pb2.ROLLOUT_CHANGE_KIND_STARTED,
        registry_pb2.ROLLOUT_CHANGE_KIND_ADVANCED,
        registry_pb2.ROLLOUT_CHANGE_KIND_PAUSED,
        registry_pb2.ROLLOUT_CHANGE_KIND_RESUMED,
        registry_pb2.ROLLOUT_CHANGE_KIND_ABORTED,
    ]
    assert shown.step_started_at.ToDatetime() >= shown.started_at.ToDatetime()


async def test_rollout_errors_become_their_status(h: Harness) -> None:
    api = RegistryApi(h.service)

    def start(**fields: Any) -> registry_pb2.StartRolloutRequest:
        return registry_pb2.StartRolloutRequest(
            model_name=h.model, version=1, actor="a", reason="r", request_id=new_id(), **fields
        )

    get = registry_pb2.GetRolloutRequest(model_name=h.model)
    assert await status_of(api.GetRollout(get, CONTEXT)) == grpc.StatusCode.NOT_FOUND
    assert await status_of(api.StartRollout(start(), CONTEXT)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    ), "the model's policy is immediate"
    assert await status_of(api.StartRollout(start(strategy=9), CONTEXT)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert await status_of(api.AdvanceRollout(_change_request(h), CONTEXT)) == (
        grpc.StatusCode.NOT_FOUND
    )
    shadow = start(strategy=registry_pb2.ROLLOUT_STRATEGY_SHADOW)
    first = await api.StartRollout(shadow, CONTEXT)
    assert await api.StartRollout(shadow, CONTEXT) == first, "a retry answers the first call"
    second = start(strategy=registry_pb2.ROLLOUT_STRATEGY_CANARY)
    assert await status_of(api.StartRollout(second, CONTEXT)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert await status_of(api.ResumeRollout(_change_request(h), CONTEXT)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    overlong = _change_request(h, rollout_id="x" * 65)
    assert await status_of(api.AbortRollout(overlong, CONTEXT)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (await api.GetRollout(get, CONTEXT)).state == registry_pb2.ROLLOUT_STATE_RUNNING


async def test_a_rollout_is_changed_as_the_tokens_principal_and_shown_to_a_viewer(
    h: Harness, guarded: str
) -> None:
    async with open_aio_channel(guarded, OPERATOR_TOKEN) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        started = await registry.StartRollout(
            registry_pb2.StartRolloutRequest(
                model_name=h.model,
                version=1,
                strategy=registry_pb2.ROLLOUT_STRATEGY_CANARY,
                actor="mallory",
                reason="r",
                request_id=new_id(),
            ),
            timeout=5,
        )
    async with open_aio_channel(guarded, VIEWER_TOKEN) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        shown = await registry.GetRollout(
            registry_pb2.GetRolloutRequest(model_name=h.model), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await registry.AbortRollout(_change_request(h), timeout=5)

    assert started.change.actor == "ops-alice"
    assert [e.payload.actor for e in h.sent.of(ModelRolloutChanged)] == ["ops-alice"]
    assert shown.state == registry_pb2.ROLLOUT_STATE_RUNNING
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == "AbortRollout needs the operator role; dash is viewer"
