"""The registry gRPC API: a thin adapter over :class:`RegistryService`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from screwops.v1 import registry_pb2, registry_pb2_grpc
from screwops_contracts.limits import MAX_ID_CHARS, MAX_NAME_CHARS, MAX_REASON_CHARS, bounded
from screwops_contracts.models import ModelKind
from screwops_errors import InvalidInputError
from screwops_rpc import ServedApi, current_principal, map_errors, method_roles, offset_page
from screwops_settings import Role

from screwops_registry.config import RolloutStrategy
from screwops_registry.service import (
    AliasChange,
    RegistryService,
    RolloutAnswer,
    Stage,
    VersionView,
)
from screwops_registry.store import Alias, Rollout, RolloutChange, RolloutChangeKind, RolloutState

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name
ROLES = method_roles(
    SERVICE_NAME,
    {
        "ListVersions": Role.VIEWER,
        "GetLineage": Role.VIEWER,
        "Promote": Role.OPERATOR,
        "Rollback": Role.OPERATOR,
        "SetAlias": Role.OPERATOR,
        "UnsetAlias": Role.OPERATOR,
        "ListAliases": Role.VIEWER,
        "Release": Role.OPERATOR,
        "Refuse": Role.OPERATOR,
        "GetRollout": Role.VIEWER,
        "StartRollout": Role.OPERATOR,
        "AdvanceRollout": Role.OPERATOR,
        "PauseRollout": Role.OPERATOR,
        "ResumeRollout": Role.OPERATOR,
        "AbortRollout": Role.OPERATOR,
    },
)

_STAGES = {
    Stage.REGISTERED: registry_pb2.MODEL_STAGE_REGISTERED,
    Stage.PRODUCTION: registry_pb2.MODEL_STAGE_PRODUCTION,
    Stage.ARCHIVED: registry_pb2.MODEL_STAGE_ARCHIVED,
    Stage.FAILED: registry_pb2.MODEL_STAGE_FAILED,
}
_KINDS = {
    ModelKind.SUPERVISED: registry_pb2.MODEL_KIND_SUPERVISED,
    ModelKind.GOOD_ONLY: registry_pb2.MODEL_KIND_GOOD_ONLY,
}
_STRATEGIES = {
    RolloutStrategy.CANARY: registry_pb2.ROLLOUT_STRATEGY_CANARY,
    RolloutStrategy.SHADOW: registry_pb2.ROLLOUT_STRATEGY_SHADOW,
}
_STRATEGY_OF = {number: strategy for strategy, number in _STRATEGIES.items()}
_ROLLOUT_STATES = {
    RolloutState.RUNNING: registry_pb2.ROLLOUT_STATE_RUNNING,
    RolloutState.PAUSED: registry_pb2.ROLLOUT_STATE_PAUSED,
    RolloutState.COMPLETED: registry_pb2.ROLLOUT_STATE_COMPLETED,
    RolloutState.ABORTED: registry_pb2.ROLLOUT_STATE_ABORTED,
}
_ROLLOUT_CHANGES = {
    RolloutChangeKind.STARTED: registry_pb2.ROLLOUT_CHANGE_KIND_STARTED,
    RolloutChangeKind.ADVANCED: registry_pb2.ROLLOUT_CHANGE_KIND_ADVANCED,
    RolloutChangeKind.PAUSED: registry_pb2.ROLLOUT_CHANGE_KIND_PAUSED,
    RolloutChangeKind.RESUMED: registry_pb2.ROLLOUT_CHANGE_KIND_RESUMED,
    RolloutChangeKind.COMPLETED: registry_pb2.ROLLOUT_CHANGE_KIND_COMPLETED,
    RolloutChangeKind.ABORTED: registry_pb2.ROLLOUT_CHANGE_KIND_ABORTED,
}
# The requests that move an alias or change a rollout: each names who, why and its request id.
Moving = (
    registry_pb2.PromoteRequest
    | registry_pb2.RollbackRequest
    | registry_pb2.SetAliasRequest
    | registry_pb2.UnsetAliasRequest
    | registry_pb2.ReleaseRequest
    | registry_pb2.RefuseRequest
    | registry_pb2.StartRolloutRequest
    | registry_pb2.ChangeRolloutRequest
)
DEFAULT_PAGE = 50
MAX_PAGE = 500


class RegistryApi(registry_pb2_grpc.RegistryServiceServicer):
    """Validates requests, delegates to the service, and renders its results."""

    def __init__(self, service: RegistryService) -> None:
        self._service = service

    @map_errors
    async def ListVersions(  # noqa: N802 (the proto's method name)
        self, request: registry_pb2.ListVersionsRequest, context: Context
    ) -> registry_pb2.ListVersionsResponse:
        _require_model(request.model_name)
        offset, limit = offset_page(
            request.page_size, request.page_token, default=DEFAULT_PAGE, most=MAX_PAGE
        )
        views = await self._service.versions(request.model_name, offset=offset, limit=limit + 1)
        return registry_pb2.ListVersionsResponse(
            model_versions=[_version(view) for view in views[:limit]],
            next_page_token=str(offset + limit) if len(views) > limit else "",
        )

    @map_errors
    async def GetLineage(  # noqa: N802
        self, request: registry_pb2.GetLineageRequest, context: Context
    ) -> registry_pb2.ModelVersion:
        _require_model(request.model_name)
        _require_version(request.version)
        return _version(await self._service.lineage(request.model_name, request.version))

    @map_errors
    async def Promote(  # noqa: N802
        self, request: registry_pb2.PromoteRequest, context: Context
    ) -> registry_pb2.AliasChange:
        _require_model(request.model_name)
        _require_version(request.version)
        audit = _audit(request)
        change = await self._service.promote(
            request.model_name,
            request.version,
            **audit,
            expect_version=_expected(request),
        )
        return _change(change)

    @map_errors
    async def Rollback(  # noqa: N802
        self, request: registry_pb2.RollbackRequest, context: Context
    ) -> registry_pb2.AliasChange:
        _require_model(request.model_name)
        audit = _audit(request)
        change = await self._service.rollback(
            request.model_name,
            **audit,
            expect_version=_expected(request),
        )
        return _change(change)

    @map_errors
    async def SetAlias(  # noqa: N802
        self, request: registry_pb2.SetAliasRequest, context: Context
    ) -> registry_pb2.AliasChange:
        _require_model(request.model_name)
        _require_version(request.version)
        bounded("alias", request.alias, MAX_ID_CHARS)
        audit = _audit(request)
        change = await self._service.set_alias(
            request.model_name,
            request.alias,
            request.version,
            **audit,
        )
        return _change(change)

    @map_errors
    async def UnsetAlias(  # noqa: N802
        self, request: registry_pb2.UnsetAliasRequest, context: Context
    ) -> registry_pb2.AliasChange:
        _require_model(request.model_name)
        bounded("alias", request.alias, MAX_ID_CHARS)
        audit = _audit(request)
        change = await self._service.unset_alias(
            request.model_name,
            request.alias,
            **audit,
        )
        return _change(change)

    @map_errors
    async def ListAliases(  # noqa: N802
        self, request: registry_pb2.ListAliasesRequest, context: Context
    ) -> registry_pb2.ListAliasesResponse:
        _require_model(request.model_name)
        aliases = await self._service.aliases(request.model_name)
        return registry_pb2.ListAliasesResponse(aliases=[_alias(alias) for alias in aliases])

    @map_errors
    async def Release(  # noqa: N802
        self, request: registry_pb2.ReleaseRequest, context: Context
    ) -> registry_pb2.AliasChange:
        _require_model(request.model_name)
        _require_version(request.version)
        audit = _audit(request)
        change = await self._service.release(
            request.model_name,
            request.version,
            **audit,
        )
        return _change(change)

    @map_errors
    async def Refuse(  # noqa: N802
        self, request: registry_pb2.RefuseRequest, context: Context
    ) -> registry_pb2.AliasChange:
        _require_model(request.model_name)
        _require_version(request.version)
        audit = _audit(request)
        change = await self._service.refuse(
            request.model_name,
            request.version,
            **audit,
        )
        return _change(change)

    @map_errors
    async def GetRollout(  # noqa: N802
        self, request: registry_pb2.GetRolloutRequest, context: Context
    ) -> registry_pb2.Rollout:
        _require_model(request.model_name)
        return _rollout(request.model_name, await self._service.rollout(request.model_name))

    @map_errors
    async def StartRollout(  # noqa: N802
        self, request: registry_pb2.StartRolloutRequest, context: Context
    ) -> registry_pb2.RolloutChangeResponse:
        _require_model(request.model_name)
        _require_version(request.version)
        audit = _audit(request)
        if request.strategy and request.strategy not in _STRATEGY_OF:
            raise InvalidInputError(f"unknown rollout strategy {request.strategy}")
        answer = await self._service.start_rollout(
            request.model_name,
            request.version,
            **audit,
            strategy=_STRATEGY_OF.get(request.strategy),
        )
        return _answer(answer)

    async def _change(
        self, request: registry_pb2.ChangeRolloutRequest, change: RolloutChangeKind
    ) -> registry_pb2.RolloutChangeResponse:
        _require_model(request.model_name)
        bounded("rollout_id", request.rollout_id, MAX_ID_CHARS)
        audit = _audit(request)
        answer = await self._service.change_rollout(
            request.model_name,
            change,
            **audit,
            rollout_id=request.rollout_id,
            expect_step=request.expect_step if request.HasField("expect_step") else None,
        )
        return _answer(answer)

    @map_errors
    async def AdvanceRollout(  # noqa: N802
        self, request: registry_pb2.ChangeRolloutRequest, context: Context
    ) -> registry_pb2.RolloutChangeResponse:
        return await self._change(request, RolloutChangeKind.ADVANCED)

    @map_errors
    async def PauseRollout(  # noqa: N802
        self, request: registry_pb2.ChangeRolloutRequest, context: Context
    ) -> registry_pb2.RolloutChangeResponse:
        return await self._change(request, RolloutChangeKind.PAUSED)

    @map_errors
    async def ResumeRollout(  # noqa: N802
        self, request: registry_pb2.ChangeRolloutRequest, context: Context
    ) -> registry_pb2.RolloutChangeResponse:
        return await self._change(request, RolloutChangeKind.RESUMED)

    @map_errors
    async def AbortRollout(  # noqa: N802
        self, request: registry_pb2.ChangeRolloutRequest, context: Context
    ) -> registry_pb2.RolloutChangeResponse:
        return await self._change(request, RolloutChangeKind.ABORTED)


server = ServedApi(
    name=SERVICE_NAME,
    add=registry_pb2_grpc.add_RegistryServiceServicer_to_server,
    servicer=RegistryApi,
).server


def _require_model(model_name: str) -> None:
    if not model_name:
        raise InvalidInputError("model_name is required")
    bounded("model_name", model_name, MAX_NAME_CHARS)


class _Audit(TypedDict):
    actor: str
    reason: str
    request_id: str


def _audit(request: Moving) -> _Audit:
    """What every move records of its request (who, why, its request id), each bounded."""
    bounded("actor", request.actor, MAX_NAME_CHARS)
    bounded("reason", request.reason, MAX_REASON_CHARS)
    bounded("request_id", request.request_id, MAX_NAME_CHARS)
    return {"actor": _actor(request), "reason": request.reason, "request_id": request.request_id}


def _actor(request: Moving) -> str:
    """Who moves the alias: the authenticated principal, whatever name the request gives, so a
    caller cannot act under another name; the request's ``actor`` only where the API has no
    tokens (a development stack), since nobody is authenticated there."""
    caller = current_principal()
    return request.actor if caller is None else caller.name


def _require_version(version: int) -> None:
    if version < 1:
        raise InvalidInputError(f"version is required and starts at 1, not {version}")


def _expected(request: registry_pb2.PromoteRequest | registry_pb2.RollbackRequest) -> int | None:
    return request.expect_version if request.HasField("expect_version") else None


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def _version(view: VersionView) -> registry_pb2.ModelVersion:
    record = view.record
    return registry_pb2.ModelVersion(
        model_name=record.model_name,
        version=record.version,
        stage=_STAGES[view.stage],
        aliases=list(view.aliases),
        dataset_id=record.dataset_id,
        dataset_version=record.dataset_version,
        run_id=record.run_id,
        evaluation_id=record.evaluation_id,
        metrics=record.metrics,
        threshold=record.threshold,
        model_kind=_KINDS[record.model_kind],
        frame_size=record.frame_size,
        created_at=_timestamp(record.created_at),
        report_key=record.report_key,
        artifact_key=record.artifact_key,
        failure_reason=record.failure_reason,
    )


def _alias(alias: Alias) -> registry_pb2.ModelAlias:
    latest = AliasChange(alias.model_name, alias.name, alias.history[-1])
    return registry_pb2.ModelAlias(alias=alias.name, version=alias.version, latest=_change(latest))


def _change(change: AliasChange) -> registry_pb2.AliasChange:
    move = change.move
    return registry_pb2.AliasChange(
        model_name=change.model_name,
        alias=change.alias,
        from_version=move.from_version,
        to_version=move.to_version,
        actor=move.actor,
        reason=move.reason,
        changed_at=_timestamp(move.at),
        sequence=move.sequence,
        request_id=move.request_id,
    )


def _rollout_change(change: RolloutChange) -> registry_pb2.RolloutChange:
    return registry_pb2.RolloutChange(
        kind=_ROLLOUT_CHANGES[change.kind],
        step=change.step,
        actor=change.actor,
        reason=change.reason,
        changed_at=_timestamp(change.at),
        sequence=change.sequence,
        request_id=change.request_id,
    )


def _rollout(model_name: str, rollout: Rollout) -> registry_pb2.Rollout:
    return registry_pb2.Rollout(
        model_name=model_name,
        rollout_id=rollout.id,
        strategy=_STRATEGIES[rollout.strategy],
        state=_ROLLOUT_STATES[rollout.state],
        production_version=rollout.production,
        candidate_version=rollout.candidate,
        steps=list(rollout.steps),
        step=rollout.step,
        share=rollout.share,
        lines=list(rollout.lines),
        min_inspections=rollout.min_inspections,
        min_step_seconds=rollout.min_step_seconds,
        started_at=_timestamp(rollout.started_at),
        step_started_at=_timestamp(rollout.step_started_at),
        changes=[_rollout_change(c) for c in rollout.changes],
    )


def _answer(answer: RolloutAnswer) -> registry_pb2.RolloutChangeResponse:
    return registry_pb2.RolloutChangeResponse(
        rollout=_rollout(answer.model_name, answer.rollout),
        change=_rollout_change(answer.change),
    )
