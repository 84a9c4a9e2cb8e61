"""The console's web app: server-rendered pages over the services' gRPC APIs.

Pages are Jinja2 templates rendered by FastAPI; forms post back and redirect (post/redirect/get),
so every page works without a script. One small static script adds what only a browser can do:
the inspection page's threshold slider re-classifies the results as it moves, and the labeling
page takes the keys 1 (good) and 2 (bad). Nothing is fetched from another origin, ever.

Each section of a page loads on its own: a service that is down or refuses a call shows its error
in its section and the rest of the page still works.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode, urlsplit

import grpc
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from google.protobuf.timestamp_pb2 import Timestamp
from jinja2 import Environment, PackageLoader, StrictUndefined
from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider
from screwops.v1 import (
    ingestion_pb2,
    inspection_pb2,
    labeling_pb2,
    registry_pb2,
)
from screwops_contracts.datasets import DEFECT_TYPES
from screwops_contracts.models import PRODUCTION_ALIAS
from screwops_contracts.runs import RunRecord
from screwops_errors import ScrewOpsError
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from screwops_console.backends import BackendError, Backends, call
from screwops_console.charts import learning_curve
from screwops_console.config import ConsoleSettings
from screwops_console.images import data_uri, thumbnail
from screwops_console.records import DATASET_ID, ReportSource, ReportSummary, RunSource

log = logging.getLogger("screwops.console")

T = TypeVar("T")

USER_COOKIE = "screwops_console_user"
"""Remembers the name last typed into an annotator, reviewer or actor field (to prefill it)."""

LABELS = {"good": ingestion_pb2.LABEL_GOOD, "bad": ingestion_pb2.LABEL_BAD}
VERDICTS = {inspection_pb2.VERDICT_GOOD: "GOOD", inspection_pb2.VERDICT_DEFECT: "DEFECT"}
# Statuses that concern one uploaded file; any other (gateway down, wrong token) is about all.
PER_FILE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE}
INSPECT_CONCURRENCY = 4
MAX_DATASET_VERSIONS = 5000

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
# Validation's report is one self-contained page with inline CSS and no scripts.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


# --- views ---------------------------------------------------------------------------------


def _time(stamp: Timestamp) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else None


@dataclass(frozen=True)
class Card:
    """One uploaded image and the gateway's answer on it (or why there is none)."""

    filename: str
    thumbnail: str | None
    probability: float | None = None
    gateway_verdict: str = ""
    model_threshold: float | None = None
    model: str = ""
    latency_ms: float | None = None
    inspection_id: str = ""
    trace_id: str = ""
    error: str = ""

    def is_bad(self, threshold: float) -> bool:
        """The verdict at ``threshold``: defective at or above it, as the gateway decides."""
        return self.probability is not None and self.probability >= threshold


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
    created_at: datetime | None
    report_key: str
    artifact_key: str
    failure_reason: str

    @property
    def in_production(self) -> bool:
        return PRODUCTION_ALIAS in self.aliases

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


@dataclass
class Section:
    """One independently loaded part of a page: its data, or the error that kept it empty."""

    error: str = ""
    items: list[Any] = field(default_factory=list)
    total: int = 0


async def _load(loader: Awaitable[list[T]]) -> Section:
    try:
        return Section(items=list(await loader))
    except BackendError as exc:
        return Section(error=str(exc))
    except ScrewOpsError as exc:
        return Section(error=f"{exc.status.name}: {exc.message}")


# --- the app -------------------------------------------------------------------------------


class SecurityHeaders(BaseHTTPMiddleware):
    """A strict content security policy, and no form posted from another site (CSRF)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method not in ("GET", "HEAD", "OPTIONS") and _cross_site(request):
            return Response("cross-site form posts are refused", status_code=403)
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


def _cross_site(request: Request) -> bool:
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc != request.headers.get("host", "")


class RequestMetrics(BaseHTTPMiddleware):
    """Requests and their latency by route, method and HTTP status, for Prometheus."""

    def __init__(self, app: Any, meter_provider: MeterProvider | None = None) -> None:
        super().__init__(app)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("screwops.console")
        self._requests = meter.create_counter(
            "screwops_console_requests", description="HTTP requests, by route and status."
        )
        self._latency = meter.create_histogram(
            "screwops_console_request_duration",
            unit="s",
            description="Time to answer an HTTP request, by route and status.",
        )

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        began = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        labels = {
            "route": getattr(route, "path", "unmatched"),
            "method": request.method,
            "status": str(response.status_code),
        }
        self._requests.add(1, labels)
        self._latency.record(time.perf_counter() - began, labels)
        return response


def _templates() -> Jinja2Templates:
    environment = Environment(
        loader=PackageLoader("screwops_console", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = lambda value: (
        value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else "—"
    )
    environment.filters["number"] = lambda value, digits=3: (
        "—" if value is None else f"{value:.{digits}f}"
    )
    return Jinja2Templates(env=environment)


def _redirect(path: str, user: str = "", **query: str | int) -> RedirectResponse:
    kept = {name: value for name, value in query.items() if value not in ("", None)}
    target = f"{path}?{urlencode(kept)}" if kept else path
    response = RedirectResponse(target, status_code=303)
    if user:
        response.set_cookie(USER_COOKIE, user, max_age=30 * 24 * 3600, samesite="strict")
    return response


def _user(request: Request) -> str:
    return request.cookies.get(USER_COOKIE, "")[:100]


def create_app(
    settings: ConsoleSettings,
    runs: RunSource,
    reports: ReportSource,
    *,
    meter_provider: MeterProvider | None = None,
) -> FastAPI:
    """The console's app; the gRPC channels open when it starts and close when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backends = Backends.connect(settings)
        try:
            yield
        finally:
            await app.state.backends.close()

    app = FastAPI(
        title="ScrewOps console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(RequestMetrics, meter_provider=meter_provider)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    templates = _templates()
    timeout = settings.rpc_timeout_s

    def backends(request: Request) -> Backends:
        found: Backends = request.app.state.backends
        return found

    def page(
        request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> HTMLResponse:
        base = {
            "page": name.split(".")[0],
            "notice": request.query_params.get("notice", ""),
            "error": request.query_params.get("error", ""),
        }
        return templates.TemplateResponse(
            request, name, {**base, **context}, status_code=status_code
        )

    # --- health and overview ---------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness: the web app answers (the services' own health is on the overview)."""
        return JSONResponse({"status": "ok", "service": settings.service_name})

    @app.get("/", response_class=HTMLResponse, name="overview")
    async def overview(request: Request) -> HTMLResponse:
        health = await backends(request).health(deadline_s=min(timeout, 2.0))
        addresses = {
            "gateway": settings.gateway_address,
            "ingestion": settings.ingestion_address,
            "labeling": settings.labeling_address,
            "registry": settings.registry_address,
        }
        return page(request, "overview.html.j2", {"health": health, "addresses": addresses})

    # --- inspection ------------------------------------------------------------------------

    @app.get("/inspection", response_class=HTMLResponse, name="inspection")
    async def inspection_form(request: Request) -> HTMLResponse:
        return page(
            request, "inspection.html.j2", {"cards": None, "threshold": 0.5, "form_error": ""}
        )

    @app.post("/inspection", response_class=HTMLResponse)
    async def inspect(
        request: Request,
        images: Annotated[list[UploadFile] | None, File()] = None,
        threshold: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5,
    ) -> HTMLResponse:
        uploads = [u for u in images or [] if u.filename]
        limit = settings.max_images * settings.max_image_bytes + 1024 * 1024
        problem = ""
        if int(request.headers.get("content-length") or 0) > limit:
            problem = f"the upload is larger than {_size(limit)}"
        elif not uploads:
            problem = "choose one or more images"
        elif len(uploads) > settings.max_images:
            problem = f"at most {settings.max_images} images at once ({len(uploads)} chosen)"
        if problem:
            context: dict[str, Any] = {"cards": None, "threshold": threshold, "form_error": problem}
            return page(request, "inspection.html.j2", context, status_code=400)
        stub = backends(request).gateway
        slots = asyncio.Semaphore(INSPECT_CONCURRENCY)

        async def one(upload: UploadFile) -> Card:
            name = upload.filename or "image"
            data = await upload.read(settings.max_image_bytes + 1)
            if len(data) > settings.max_image_bytes:
                return Card(name, None, error=f"larger than {_size(settings.max_image_bytes)}")
            preview = await asyncio.to_thread(thumbnail, data)
            request_id = f"console-{uuid.uuid4().hex[:12]}"
            message = inspection_pb2.InspectRequest(
                image=data,
                line_id=settings.line_id,
                camera_id=settings.camera_id,
                request_id=request_id,
            )
            began = time.perf_counter()
            async with slots:
                try:
                    answer = await call(
                        "gateway",
                        stub.Inspect(message, timeout=timeout),
                    )
                except BackendError as exc:
                    detail = exc.details if exc.code in PER_FILE else str(exc)
                    return Card(name, preview, error=detail)
            return Card(
                filename=name,
                thumbnail=preview,
                probability=answer.defect_probability,
                gateway_verdict=VERDICTS.get(answer.verdict, "?"),
                model_threshold=answer.threshold,
                model=f"{answer.model_name} v{answer.model_version}",
                latency_ms=(time.perf_counter() - began) * 1000,
                inspection_id=answer.inspection_id,
                trace_id=answer.trace_id,
            )

        cards = await asyncio.gather(*(one(upload) for upload in uploads))
        failed = sum(1 for card in cards if card.error)
        context = {
            "cards": cards,
            "threshold": threshold,
            "form_error": f"{failed} of {len(cards)} images failed" if failed else "",
        }
        return page(request, "inspection.html.j2", context)

    # --- labeling --------------------------------------------------------------------------

    async def dataset_versions(stub: Backends) -> list[ingestion_pb2.DatasetVersion]:
        versions: list[ingestion_pb2.DatasetVersion] = []
        token = ""
        while len(versions) < MAX_DATASET_VERSIONS:
            answer = await call(
                "ingestion",
                stub.ingestion.ListDatasets(
                    ingestion_pb2.ListDatasetsRequest(page_size=500, page_token=token),
                    timeout=timeout,
                ),
            )
            versions.extend(answer.versions)
            token = answer.next_page_token
            if not token:
                break
        return versions

    @app.get("/labeling", response_class=HTMLResponse, name="labeling")
    async def labeling(request: Request, dataset: str = "", annotator: str = "") -> HTMLResponse:
        stub = backends(request)
        annotator = annotator.strip() or _user(request)

        async def dataset_ids() -> list[str]:
            return sorted({v.dataset_id for v in await dataset_versions(stub)})

        async def task() -> list[labeling_pb2.LabelTask]:
            if not (dataset and annotator):
                return []
            try:
                found = await call(
                    "labeling",
                    stub.labeling.NextUnlabeled(
                        labeling_pb2.NextUnlabeledRequest(dataset_id=dataset, annotator=annotator),
                        timeout=timeout,
                    ),
                )
            except BackendError as exc:
                if exc.code == grpc.StatusCode.NOT_FOUND:
                    return []
                raise
            return [found]

        async def queue() -> Section:
            try:
                answer = await call(
                    "labeling",
                    stub.labeling.ListReviewQueue(
                        labeling_pb2.ListReviewQueueRequest(
                            include_images=True, page_size=settings.review_page_size
                        ),
                        timeout=timeout,
                    ),
                )
            except BackendError as exc:
                return Section(error=str(exc))
            items = [(item, data_uri(item.image)) for item in answer.review_items]
            return Section(items=items, total=answer.total_size)

        datasets, tasks, reviews = await asyncio.gather(
            _load(dataset_ids()), _load(task()), queue()
        )
        current = tasks.items[0] if tasks.items else None
        context = {
            "dataset": dataset,
            "annotator": annotator,
            "datasets": datasets,
            "task": current,
            "task_error": tasks.error,
            "task_image": data_uri(current.image) if current is not None else None,
            "reviews": reviews,
            "defect_types": DEFECT_TYPES,
            "verdicts": VERDICTS,
        }
        return page(request, "labeling.html.j2", context)

    @app.post("/labeling/label")
    async def submit_label(
        request: Request,
        image_sha256: Annotated[str, Form()] = "",
        dataset: Annotated[str, Form()] = "",
        annotator: Annotated[str, Form()] = "",
        label: Annotated[str, Form()] = "",
        defect_type: Annotated[str, Form()] = "",
        filename: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        annotator = annotator.strip()
        back = {"dataset": dataset, "annotator": annotator}
        if label not in LABELS or not (image_sha256 and dataset and annotator):
            return _redirect("/labeling", error="a label needs an image, a dataset, a name", **back)
        message = labeling_pb2.SubmitLabelRequest(
            image_sha256=image_sha256,
            dataset_id=dataset,
            label=LABELS[label],
            annotator=annotator,
            defect_type=(defect_type.strip() or None) if label == "bad" else None,
        )
        message.labeled_at.GetCurrentTime()
        try:
            answer = await call(
                "labeling", backends(request).labeling.SubmitLabel(message, timeout=timeout)
            )
        except BackendError as exc:
            return _redirect("/labeling", annotator, error=str(exc), **back)
        done = f"labeled {filename or image_sha256[:12]} {label}"
        return _redirect(
            "/labeling",
            annotator,
            notice=f"{done}; {answer.remaining_count} left to label",
            **back,
        )

    @app.post("/labeling/review")
    async def submit_review(
        request: Request,
        inspection_id: Annotated[str, Form()] = "",
        reviewer: Annotated[str, Form()] = "",
        label: Annotated[str, Form()] = "",
        dataset: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        reviewer = reviewer.strip()
        back = {"dataset": dataset, "annotator": reviewer}
        if label not in LABELS or not (inspection_id and reviewer):
            return _redirect("/labeling", error="a review needs a label and your name", **back)
        message = labeling_pb2.SubmitReviewRequest(
            inspection_id=inspection_id, label=LABELS[label], reviewer=reviewer
        )
        message.reviewed_at.GetCurrentTime()
        try:
            answer = await call(
                "labeling", backends(request).labeling.SubmitReview(message, timeout=timeout)
            )
        except BackendError as exc:
            return _redirect("/labeling", reviewer, error=str(exc), **back)
        right = "right" if answer.verdict_correct else "wrong"
        return _redirect(
            "/labeling",
            reviewer,
            notice=f"review recorded: the model was {right}; {answer.remaining_count} left "
            "in the queue",
            **back,
        )

    # --- pipeline --------------------------------------------------------------------------

    @app.get("/pipeline", response_class=HTMLResponse, name="pipeline")
    async def pipeline(request: Request) -> HTMLResponse:
        stub = backends(request)

        async def datasets() -> list[DatasetRow]:
            versions = sorted(
                await dataset_versions(stub),
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

        async def run_rows() -> list[RunRow]:
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
                for run in await runs.list_runs(settings.runs_shown)
            ]

        async def versions() -> list[VersionRow]:
            answer = await call(
                "registry",
                stub.registry.ListVersions(
                    registry_pb2.ListVersionsRequest(model_name=settings.model_name, page_size=50),
                    timeout=timeout,
                ),
            )
            return [VersionRow.of(v) for v in answer.model_versions]

        dataset_section, run_section, model_section = await asyncio.gather(
            _load(datasets()), _load(run_rows()), _load(versions())
        )
        production = next((v for v in model_section.items if v.in_production), None)
        context = {
            "datasets": dataset_section,
            "runs": run_section,
            "models": model_section,
            "production": production,
            "model_name": settings.model_name,
            "user": _user(request),
        }
        return page(request, "pipeline.html.j2", context)

    @app.post("/pipeline/promote")
    async def promote(
        request: Request,
        version: Annotated[int, Form(ge=1)],
        actor: Annotated[str, Form()] = "",
        reason: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        actor, reason = actor.strip(), reason.strip()
        if not (actor and reason):
            return _redirect("/pipeline", error="promoting needs your name and a reason")
        message = registry_pb2.PromoteRequest(
            model_name=settings.model_name, version=version, actor=actor, reason=reason
        )
        try:
            change = await call(
                "registry",
                backends(request).registry.Promote(message, timeout=settings.promote_timeout_s),
            )
        except BackendError as exc:
            return _redirect("/pipeline", actor, error=str(exc))
        return _redirect("/pipeline", actor, notice=_moved("promoted", change))

    @app.post("/pipeline/rollback")
    async def rollback(
        request: Request,
        actor: Annotated[str, Form()] = "",
        reason: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        actor, reason = actor.strip(), reason.strip()
        if not (actor and reason):
            return _redirect("/pipeline", error="rolling back needs your name and a reason")
        message = registry_pb2.RollbackRequest(
            model_name=settings.model_name, actor=actor, reason=reason
        )
        try:
            change = await call(
                "registry", backends(request).registry.Rollback(message, timeout=timeout)
            )
        except BackendError as exc:
            return _redirect("/pipeline", actor, error=str(exc))
        return _redirect("/pipeline", actor, notice=_moved("rolled back", change))

    @app.get("/reports/{dataset_id}/v{version}", name="report")
    async def report(dataset_id: str, version: int) -> Response:
        """A dataset version's validation report, as validation rendered it."""
        if not DATASET_ID.fullmatch(dataset_id) or dataset_id in {".", ".."} or version < 1:
            return Response("no such report", status_code=404, media_type="text/plain")
        try:
            body = await reports.html(dataset_id, version)
        except ScrewOpsError as exc:
            return Response(f"{exc.status.name}: {exc.message}", status_code=503)
        if body is None:
            return Response(
                f"{dataset_id} v{version} has no validation report (yet)",
                status_code=404,
                media_type="text/plain",
            )
        return HTMLResponse(body, headers={"Content-Security-Policy": REPORT_CSP})

    return app


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.0f} KiB"
    return f"{count / (1024 * 1024):.0f} MiB"


def _moved(action: str, change: registry_pb2.AliasChange) -> str:
    before = f"v{change.from_version}" if change.HasField("from_version") else "none"
    return (
        f"{action}: {change.alias} {before} → v{change.to_version} "
        f"(by {change.actor}: {change.reason})"
    )


async def _bounded(calls: Sequence[Awaitable[T]], *, limit: int) -> list[T]:
    slots = asyncio.Semaphore(limit)

    async def one(pending: Awaitable[T]) -> T:
        async with slots:
            return await pending

    return list(await asyncio.gather(*(one(pending) for pending in calls)))


__all__ = ["Card", "DatasetRow", "RunRow", "VersionRow", "create_app"]
