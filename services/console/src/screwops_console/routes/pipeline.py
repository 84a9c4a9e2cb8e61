"""The pipeline page: dataset versions with their validation verdicts, training runs with their
learning curves, the model's versions (their metrics labelled, each beside the gate check of the
evaluation report that judged it), with promote and rollback, and release or refusal of
the candidate (manual release policy), and the model's latest rollout (``rollouts``), which an
operator may advance, pause, resume or abort."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from uuid import uuid4

import grpc
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from screwops.v1 import registry_pb2
from screwops_contracts.models import CANDIDATE_ALIAS, PRODUCTION_ALIAS
from screwops_contracts.runs import RunRecord
from screwops_settings import Role

from screwops_console.backends import BackendError, Backends, call
from screwops_console.charts import learning_curve
from screwops_console.config import ConsoleSettings
from screwops_console.figures import Figure, figures
from screwops_console.prometheus import Prometheus
from screwops_console.records import GateVerdict, ReportSource, ReportSummary, RunSource
from screwops_console.rollouts import (
    ACTIONS,
    Change,
    Comparison,
    RolloutView,
    compare,
    time_of,
)
from screwops_console.routes.common import (
    AppBackends,
    AppPrometheus,
    AppReports,
    AppRuns,
    AppSettings,
    Section,
    dataset_versions,
    load,
    page,
    redirect,
)
from screwops_console.session import Operator, SignedIn, acting_for

T = TypeVar("T")

router = APIRouter()


@dataclass(frozen=True)
class DatasetRow:
    """A dataset version and its validation report's verdict."""

    dataset_id: str
    version: int
    image_count: int
    added_count: int
    created_at: datetime | None
    correlation_id: str
    report: ReportSummary | None


@dataclass(frozen=True)
class VersionRow:
    """A registered model version with its lineage."""

    version: int
    stage: str
    aliases: list[str]
    dataset_id: str
    dataset_version: int
    run_id: str
    evaluation_id: str
    metrics: list[tuple[str, float]]
    threshold: float
    model_kind: str  # "supervised", "good-only", or "" when the registry recorded none
    frame_size: int  # 0: exported before models took full frames (never deployed: retrain it)
    created_at: datetime | None
    report_key: str
    artifact_key: str
    failure_reason: str
    gate: GateVerdict | None = None  # the evaluation report's checks, once read

    @property
    def figures(self) -> list[Figure]:
        """The metrics labelled, each beside the gate check that judged it."""
        return figures(dict(self.metrics), self.gate)

    @property
    def frame_label(self) -> str:
        return f"{self.frame_size} px" if self.frame_size else "none (retrain to serve)"

    @property
    def in_production(self) -> bool:
        return PRODUCTION_ALIAS in self.aliases

    @property
    def candidate(self) -> bool:
        """It waits for an operator's release (the model's release policy is manual)."""
        return CANDIDATE_ALIAS in self.aliases

    @property
    def promotable(self) -> bool:
        return not self.in_production and self.stage != "failed"

    @classmethod
    def of(cls, message: registry_pb2.ModelVersion) -> VersionRow:
        stage = registry_pb2.ModelStage.Name(message.stage).removeprefix("MODEL_STAGE_").lower()
        return cls(
            version=message.version,
            stage=stage,
            aliases=list(message.aliases),
            dataset_id=message.dataset_id,
            dataset_version=message.dataset_version,
            run_id=message.run_id,
            evaluation_id=message.evaluation_id,
            metrics=sorted(message.metrics.items()),
            threshold=message.threshold,
            model_kind=_kind(message.model_kind),
            frame_size=message.frame_size,
            created_at=time_of(message.created_at),
            report_key=message.report_key,
            artifact_key=message.artifact_key,
            failure_reason=message.failure_reason,
        )


def _kind(kind: registry_pb2.ModelKind.ValueType) -> str:
    if kind == registry_pb2.MODEL_KIND_UNSPECIFIED:
        return ""
    return registry_pb2.ModelKind.Name(kind).removeprefix("MODEL_KIND_").lower().replace("_", "-")


@dataclass(frozen=True)
class RunRow:
    """A training run with its learning curves."""

    run: RunRecord
    loss_chart: Any
    accuracy_chart: Any

    @property
    def figures(self) -> list[Figure]:
        """The run's metrics labelled (the gate judges the evaluation's, not these)."""
        return figures(self.run.metrics)


@router.get("/pipeline", response_class=HTMLResponse, name="pipeline")
async def pipeline(
    request: Request,
    settings: AppSettings,
    backends: AppBackends,
    runs: AppRuns,
    reports: AppReports,
    prometheus: AppPrometheus,
    account: SignedIn,
) -> HTMLResponse:
    (
        dataset_section,
        run_section,
        model_section,
        (rollout_section, comparison),
    ) = await asyncio.gather(
        load(_datasets(backends, reports, settings)),
        load(_run_rows(runs, settings.runs_shown)),
        load(model_versions(backends, settings, settings.model_name, reports)),
        _rollout(backends, prometheus, settings),
    )
    production = next((v for v in model_section.items if v.in_production), None)
    context = {
        "datasets": dataset_section,
        "runs": run_section,
        "models": model_section,
        "production": production,
        "rollout": rollout_section,
        "comparison": comparison,
        "thresholds": {v.version: v.threshold for v in model_section.items},
        "may_operate": account.role.allows(Role.OPERATOR),
        "model_name": settings.model_name,
        "new_request_id": new_request_id,
    }
    return page(request, "pipeline.html.j2", context)


def new_request_id() -> str:
    """The id of one operator move: each promote and rollback form carries its own, so a form
    sent again (the answer was lost) finds the move its first sending made, instead of moving
    production once more."""
    return str(uuid4())


async def _datasets(
    backends: Backends, reports: ReportSource, settings: ConsoleSettings
) -> list[DatasetRow]:
    """The newest dataset versions, each with its validation report's summary."""
    versions = sorted(
        await dataset_versions(backends, settings),
        key=lambda v: (v.created_at.seconds, v.created_at.nanos, v.dataset_id, v.version),
        reverse=True,
    )[: settings.datasets_shown]
    summaries = await _bounded(
        [reports.summary(v.dataset_id, v.version) for v in versions], limit=8
    )
    return [
        DatasetRow(
            dataset_id=v.dataset_id,
            version=v.version,
            image_count=v.image_count,
            added_count=v.added_count,
            created_at=time_of(v.created_at),
            correlation_id=v.correlation_id,
            report=summary,
        )
        for v, summary in zip(versions, summaries, strict=True)
    ]


async def _run_rows(runs: RunSource, shown: int) -> list[RunRow]:
    return [
        RunRow(
            run=run,
            loss_chart=learning_curve(
                run.epochs, ("loss", "val_loss"), title="loss", best_epoch=run.best_epoch
            ),
            accuracy_chart=learning_curve(
                run.epochs,
                ("accuracy", "val_accuracy"),
                title="accuracy",
                best_epoch=run.best_epoch,
            ),
        )
        for run in await runs.list_runs(shown)
    ]


async def model_versions(
    backends: Backends,
    settings: ConsoleSettings,
    model_name: str,
    reports: ReportSource | None = None,
) -> list[VersionRow]:
    """``model_name``'s versions as the registry lists them; with ``reports``, each with its
    gate checks from its evaluation report."""
    answer = await call(
        "registry",
        backends.registry.ListVersions(
            registry_pb2.ListVersionsRequest(model_name=model_name, page_size=50),
            timeout=settings.rpc_timeout_s,
        ),
    )
    rows = [VersionRow.of(v) for v in answer.model_versions]
    if reports is None:
        return rows
    gates = await _bounded([reports.gate(row.report_key) for row in rows], limit=8)
    return [replace(row, gate=gate) for row, gate in zip(rows, gates, strict=True)]


async def _rollout(
    backends: Backends, prometheus: Prometheus, settings: ConsoleSettings
) -> tuple[Section, Section]:
    """The model's latest rollout (none: an empty section) and, on its own, its comparison, so
    Prometheus being down leaves the registry's part of the panel standing."""
    try:
        found = await call(
            "registry",
            backends.registry.GetRollout(
                registry_pb2.GetRolloutRequest(model_name=settings.model_name),
                timeout=settings.rpc_timeout_s,
            ),
        )
    except BackendError as exc:
        if exc.code == grpc.StatusCode.NOT_FOUND:
            return Section(), Section()
        return Section(error=str(exc)), Section()

    async def compared() -> list[Comparison]:
        return [await compare(prometheus, found, datetime.now(UTC))]

    return Section(items=[RolloutView.of(found)]), await load(compared())


@router.post("/pipeline/promote")
async def promote(
    settings: AppSettings,
    backends: AppBackends,
    account: Operator,
    version: Annotated[int, Form(ge=1)],
    reason: Annotated[str, Form()] = "",
    request_id: Annotated[str, Form()] = "",
    expect_version: Annotated[int | None, Form(ge=1)] = None,
) -> RedirectResponse:
    """Promote ``version`` as the logged-in operator: the registry records them, by name."""
    reason = reason.strip()
    if not reason:
        return redirect("/pipeline", error="promoting needs a reason")
    message = registry_pb2.PromoteRequest(
        model_name=settings.model_name,
        version=version,
        actor=account.name,
        reason=reason,
        request_id=request_id.strip() or new_request_id(),
        expect_version=expect_version,
    )
    return await _answer(
        "promoted",
        backends.registry.Promote(
            message, timeout=settings.promote_timeout_s, metadata=acting_for(account)
        ),
    )


@router.post("/pipeline/rollback")
async def rollback(
    settings: AppSettings,
    backends: AppBackends,
    account: Operator,
    reason: Annotated[str, Form()] = "",
    request_id: Annotated[str, Form()] = "",
    expect_version: Annotated[int | None, Form(ge=1)] = None,
) -> RedirectResponse:
    """Roll production back as the logged-in operator: the registry records them, by name."""
    reason = reason.strip()
    if not reason:
        return redirect("/pipeline", error="rolling back needs a reason")
    message = registry_pb2.RollbackRequest(
        model_name=settings.model_name,
        actor=account.name,
        reason=reason,
        request_id=request_id.strip() or new_request_id(),
        expect_version=expect_version,
    )
    return await _answer(
        "rolled back",
        backends.registry.Rollback(
            message, timeout=settings.rpc_timeout_s, metadata=acting_for(account)
        ),
    )


@router.post("/pipeline/release")
async def release(
    settings: AppSettings,
    backends: AppBackends,
    account: Operator,
    version: Annotated[int, Form(ge=1)],
    reason: Annotated[str, Form()] = "",
    request_id: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Release the candidate ``version`` as the logged-in operator: the registry announces the
    release and deploys it as a promotion."""
    reason = reason.strip()
    if not reason:
        return redirect("/pipeline", error="releasing needs a reason")
    message = registry_pb2.ReleaseRequest(
        model_name=settings.model_name,
        version=version,
        actor=account.name,
        reason=reason,
        request_id=request_id.strip() or new_request_id(),
    )
    return await _answer(
        "released",
        backends.registry.Release(
            message, timeout=settings.promote_timeout_s, metadata=acting_for(account)
        ),
    )


@router.post("/pipeline/refuse")
async def refuse(
    settings: AppSettings,
    backends: AppBackends,
    account: Operator,
    version: Annotated[int, Form(ge=1)],
    reason: Annotated[str, Form()] = "",
    request_id: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Refuse the candidate ``version`` as the logged-in operator: the registry records it."""
    reason = reason.strip()
    if not reason:
        return redirect("/pipeline", error="refusing needs a reason")
    message = registry_pb2.RefuseRequest(
        model_name=settings.model_name,
        version=version,
        actor=account.name,
        reason=reason,
        request_id=request_id.strip() or new_request_id(),
    )
    return await _answer(
        "refused",
        backends.registry.Refuse(
            message, timeout=settings.rpc_timeout_s, metadata=acting_for(account)
        ),
    )


@router.post("/pipeline/rollout/{action}")
async def change_rollout(
    settings: AppSettings,
    backends: AppBackends,
    account: Operator,
    action: str,
    reason: Annotated[str, Form()] = "",
    request_id: Annotated[str, Form()] = "",
    rollout_id: Annotated[str, Form()] = "",
    expect_step: Annotated[int | None, Form(ge=0)] = None,
) -> RedirectResponse:
    """Advance, pause, resume or abort the model's rollout as the logged-in operator. The form
    names the rollout and the step its page showed, so a decision taken on what the operator saw
    is refused (FAILED_PRECONDITION) once the rollout has moved on, by the controller or someone
    else, rather than applied to a later step or another rollout."""
    method = ACTIONS.get(action)
    if method is None:
        raise HTTPException(404, f"no rollout action {action!r}")
    reason = reason.strip()
    if not reason:
        return redirect("/pipeline", error=f"{action} needs a reason")
    message = registry_pb2.ChangeRolloutRequest(
        model_name=settings.model_name,
        rollout_id=rollout_id.strip(),
        expect_step=expect_step,
        actor=account.name,
        reason=reason,
        request_id=request_id.strip() or new_request_id(),
    )
    # Advancing past the last step loads the candidate as production; aborting unloads it.
    timeout = (
        settings.rpc_timeout_s if action in ("pause", "resume") else settings.promote_timeout_s
    )
    try:
        answer = await call(
            "registry",
            getattr(backends.registry, method)(
                message, timeout=timeout, metadata=acting_for(account)
            ),
        )
    except BackendError as exc:
        return redirect("/pipeline", error=str(exc))
    return redirect("/pipeline", notice=_rolled(answer))


def _rolled(answer: registry_pb2.RolloutChangeResponse) -> str:
    view, change = RolloutView.of(answer.rollout), Change.of(answer.change)
    return (
        f"rollout {view.rollout_id} {change.kind}: v{view.candidate_version} beside "
        f"v{view.production_version}, step {change.step + 1} of {len(view.steps)}, "
        f"{view.share:g}% to the candidate now (by {change.actor}: {change.reason})"
    )


async def _answer(action: str, sent: Awaitable[registry_pb2.AliasChange]) -> RedirectResponse:
    """The page again, saying what moved, or why the registry refused."""
    try:
        change = await call("registry", sent)
    except BackendError as exc:
        return redirect("/pipeline", error=str(exc))
    return redirect("/pipeline", notice=_moved(action, change))


def _moved(action: str, change: registry_pb2.AliasChange) -> str:
    before = f"v{change.from_version}" if change.HasField("from_version") else "none"
    after = f"v{change.to_version}" if change.HasField("to_version") else "none"
    return f"{action}: {change.alias} {before} → {after} (by {change.actor}: {change.reason})"


async def _bounded(calls: Sequence[Awaitable[T]], *, limit: int) -> list[T]:
    slots = asyncio.Semaphore(limit)

    async def one(pending: Awaitable[T]) -> T:
        async with slots:
            return await pending

    return list(await asyncio.gather(*(one(pending) for pending in calls)))
