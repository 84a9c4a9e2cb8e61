"""The pipeline page: dataset versions with their validation verdicts, training runs with their
learning curves, and the model's versions, with promote and rollback, and release or refusal of
the candidate (manual release policy)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from uuid import uuid4

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from google.protobuf.timestamp_pb2 import Timestamp
from screwops.v1 import registry_pb2
from screwops_contracts.models import CANDIDATE_ALIAS, PRODUCTION_ALIAS
from screwops_contracts.runs import RunRecord

from screwops_console.backends import BackendError, Backends, call
from screwops_console.charts import learning_curve
from screwops_console.config import ConsoleSettings
from screwops_console.records import ReportSource, ReportSummary, RunSource
from screwops_console.routes.common import (
    AppBackends,
    AppReports,
    AppRuns,
    AppSettings,
    dataset_versions,
    load,
    page,
    redirect,
)
from screwops_console.session import Operator, acting_for

T = TypeVar("T")

router = APIRouter()


def _time(stamp: Timestamp) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else None


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
            created_at=_time(message.created_at),
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


@router.get("/pipeline", response_class=HTMLResponse, name="pipeline")
async def pipeline(
    request: Request,
    settings: AppSettings,
    backends: AppBackends,
    runs: AppRuns,
    reports: AppReports,
) -> HTMLResponse:
    dataset_section, run_section, model_section = await asyncio.gather(
        load(_datasets(backends, reports, settings)),
        load(_run_rows(runs, settings.runs_shown)),
        load(_versions(backends, settings)),
    )
    production = next((v for v in model_section.items if v.in_production), None)
    context = {
        "datasets": dataset_section,
        "runs": run_section,
        "models": model_section,
        "production": production,
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
            created_at=_time(v.created_at),
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


async def _versions(backends: Backends, settings: ConsoleSettings) -> list[VersionRow]:
    answer = await call(
        "registry",
        backends.registry.ListVersions(
            registry_pb2.ListVersionsRequest(model_name=settings.model_name, page_size=50),
            timeout=settings.rpc_timeout_s,
        ),
    )
    return [VersionRow.of(v) for v in answer.model_versions]


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
