"""Fake servicers of the four APIs the console calls, served by one in-process gRPC server,
in-memory run records and validation reports, and Prometheus's query API over HTTP.

The servicers keep what they were asked, so a test can check the console sent the right request,
and answer the way the real services do (statuses included). The browser test serves the same
fakes, so its page flows are the ones the unit tests check.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from PIL import Image
from screwops.v1 import (
    ingestion_pb2,
    ingestion_pb2_grpc,
    inspection_pb2,
    inspection_pb2_grpc,
    labeling_pb2,
    labeling_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from screwops_console.records import GateVerdict, ReportSummary
from screwops_contracts.runs import EpochRecord, RunRecord, RunStatus
from screwops_rpc import server_credentials

MODEL = "screw-classifier"
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def stamp(when: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(when)
    return value


def png(gray: int, size: int = 64) -> bytes:
    """A uniform gray PNG: the fake gateway answers ``gray / 255`` as its defect probability."""
    out = io.BytesIO()
    image = Image.new("L", (size, size), gray)
    # A darker square, so a screenshot of the image is not one colour.
    image.paste(max(gray - 60, 0), (size // 4, size // 4, size // 2, size // 2))
    image.save(out, format="PNG")
    return out.getvalue()


def _corner_gray(data: bytes) -> float:
    with Image.open(io.BytesIO(data)) as image:
        return float(image.convert("L").getpixel((0, 0)))  # type: ignore[arg-type]


@dataclass
class FakeGateway(inspection_pb2_grpc.InspectionServiceServicer):
    """Inspect: probability = the image's corner gray level / 255; threshold 0.5."""

    token: str = ""
    threshold: float = 0.5
    version: int = 3
    requests: list[Any] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)

    def Inspect(self, request: Any, context: Any) -> Any:  # noqa: N802
        given = {k: v for k, v in context.invocation_metadata()}
        self.metadata.append(given)
        if self.token and given.get("authorization") != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        self.requests.append(request)
        try:
            probability = _corner_gray(request.image) / 255
        except OSError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "image: not a PNG or JPEG")
        defect = probability >= self.threshold
        return inspection_pb2.InspectResponse(
            verdict=inspection_pb2.VERDICT_DEFECT if defect else inspection_pb2.VERDICT_GOOD,
            defect_probability=probability,
            threshold=self.threshold,
            model_name=MODEL,
            model_version=self.version,
            request_id=request.request_id,
            inspection_id=f"insp-{len(self.requests)}",
            trace_id="0" * 31 + "1",
        )


def dataset_version(dataset_id: str, version: int, images: int = 10) -> Any:
    return ingestion_pb2.DatasetVersion(
        dataset_id=dataset_id,
        version=version,
        image_count=images,
        added_count=images // version,
        manifest_key=f"{dataset_id}/v{version}/manifest.json",
        created_at=stamp(T0 + timedelta(hours=version)),
        correlation_id=f"corr-{dataset_id}-{version}",
    )


@dataclass
class FakeIngestion(ingestion_pb2_grpc.IngestionServiceServicer):
    versions: list[Any] = field(default_factory=list)
    unavailable: bool = False

    def ListDatasets(self, request: Any, context: Any) -> Any:  # noqa: N802
        if self.unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "storage briefly unavailable")
        ordered = sorted(self.versions, key=lambda v: (v.dataset_id, v.version))
        offset = int(request.page_token or "0")
        size = request.page_size or 50
        page = ordered[offset : offset + size]
        more = offset + size < len(ordered)
        return ingestion_pb2.ListDatasetsResponse(
            versions=page, next_page_token=str(offset + size) if more else ""
        )


def label_task(dataset_id: str, number: int, remaining: int) -> Any:
    return labeling_pb2.LabelTask(
        image_sha256=f"{number:064x}",
        dataset_id=dataset_id,
        dataset_version=2,
        image=png(40 + number * 20),
        object_key=f"raw/00/{number:064x}",
        filename=f"screw-{number:03d}.png",
        reserved_until=stamp(T0 + timedelta(minutes=10)),
        remaining_count=remaining,
    )


def review_item(number: int, probability: float = 0.48) -> Any:
    return labeling_pb2.ReviewItem(
        inspection_id=f"insp-{number}",
        image_sha256=f"{number + 100:064x}",
        object_key=f"inspections/{number}",
        image=png(90),
        line_id="line-3",
        camera_id="cam-a",
        verdict=inspection_pb2.VERDICT_GOOD,
        defect_probability=probability,
        threshold=0.5,
        model_name=MODEL,
        model_version=3,
        inspected_at=stamp(T0),
        queue_reason="near threshold",
    )


@dataclass
class FakeLabeling(labeling_pb2_grpc.LabelingServiceServicer):
    """Unlabeled images handed out in order; labels and reviews recorded."""

    tasks: dict[str, list[Any]] = field(default_factory=dict)
    queue: list[Any] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    reviews: list[Any] = field(default_factory=list)
    next_requests: list[Any] = field(default_factory=list)
    queue_requests: list[Any] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)

    def NextUnlabeled(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.next_requests.append(request)
        if not request.annotator:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "annotator: required")
        labeled = {label.image_sha256 for label in self.labels}
        left = [t for t in self.tasks.get(request.dataset_id, []) if t.image_sha256 not in labeled]
        if not left:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"nothing left to label in {request.dataset_id}"
            )
        task = labeling_pb2.LabelTask()
        task.CopyFrom(left[0])
        task.remaining_count = len(left)
        return task

    def SubmitLabel(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.metadata.append(dict(context.invocation_metadata()))
        known = {t.image_sha256 for t in self.tasks.get(request.dataset_id, [])}
        if request.image_sha256 not in known:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no image {request.image_sha256[:12]}")
        self.labels.append(request)
        labeled = {label.image_sha256 for label in self.labels}
        return labeling_pb2.SubmitLabelResponse(remaining_count=len(known - labeled))

    def ListReviewQueue(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.queue_requests.append(request)
        items = []
        for item in self.queue[: request.page_size or 50]:
            copy = labeling_pb2.ReviewItem()
            copy.CopyFrom(item)
            if not request.include_images:
                copy.ClearField("image")
            items.append(copy)
        return labeling_pb2.ListReviewQueueResponse(review_items=items, total_size=len(self.queue))

    def SubmitReview(self, request: Any, context: Any) -> Any:  # noqa: N802
        found = [item for item in self.queue if item.inspection_id == request.inspection_id]
        if not found:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no inspection {request.inspection_id}")
        self.reviews.append(request)
        self.queue.remove(found[0])
        model_said_bad = found[0].verdict == inspection_pb2.VERDICT_DEFECT
        correct = model_said_bad == (request.label == ingestion_pb2.LABEL_BAD)
        return labeling_pb2.SubmitReviewResponse(
            verdict_correct=correct, remaining_count=len(self.queue)
        )


def model_version(number: int, *, aliases: tuple[str, ...] = (), failed: bool = False) -> Any:
    if failed:
        stage = registry_pb2.MODEL_STAGE_FAILED
    elif "production" in aliases:
        stage = registry_pb2.MODEL_STAGE_PRODUCTION
    else:
        stage = registry_pb2.MODEL_STAGE_REGISTERED
    return registry_pb2.ModelVersion(
        model_name=MODEL,
        version=number,
        stage=stage,
        aliases=list(aliases),
        dataset_id="screws",
        dataset_version=number,
        run_id=f"run-{number:012d}",
        evaluation_id=f"eval-{number}",
        metrics={"accuracy": 0.9 + number / 100, "recall": 0.8},
        threshold=0.0372 if number == 2 else 0.45,
        model_kind=(
            registry_pb2.MODEL_KIND_GOOD_ONLY if number == 2 else registry_pb2.MODEL_KIND_SUPERVISED
        ),
        created_at=stamp(T0 + timedelta(days=number)),
        report_key=f"evaluations/eval-{number}.json",
        artifact_key=f"runs/run-{number:012d}/saved_model",
        failure_reason="check inference failed" if failed else "",
    )


@dataclass
class FakeRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """Versions, the production and candidate aliases, the version a rollback returns to and the
    model's latest rollout."""

    versions: dict[int, Any] = field(default_factory=dict)
    production: int | None = None
    candidate: int | None = None
    previous: list[int] = field(default_factory=list)
    rollout: Any = None
    requests: list[Any] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)

    def _move(self, to: int, actor: str, reason: str) -> Any:
        before = self.production
        for number, version in self.versions.items():
            version.ClearField("aliases")
            if number == to:
                version.aliases.append("production")
                version.stage = registry_pb2.MODEL_STAGE_PRODUCTION
            elif version.stage == registry_pb2.MODEL_STAGE_PRODUCTION:
                version.stage = registry_pb2.MODEL_STAGE_ARCHIVED
        self.production = to
        return registry_pb2.AliasChange(
            model_name=MODEL,
            alias="production",
            from_version=before,
            to_version=to,
            actor=actor,
            reason=reason,
            changed_at=stamp(T0),
        )

    def ListVersions(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        if request.model_name != MODEL:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_name}")
        newest = sorted(self.versions.values(), key=lambda v: -v.version)
        return registry_pb2.ListVersionsResponse(model_versions=newest)

    def GetLineage(self, request: Any, context: Any) -> Any:  # noqa: N802
        if request.version not in self.versions:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no version {request.version}")
        return self.versions[request.version]

    def _check(self, request: Any, context: Any) -> None:
        if not request.actor or not request.reason or not request.request_id:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "actor, reason and request_id are required"
            )
        expects = "expect_version" in request.DESCRIPTOR.fields_by_name
        if (
            expects
            and request.HasField("expect_version")
            and request.expect_version != self.production
        ):
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"production is v{self.production}, not v{request.expect_version}",
            )

    def Promote(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        self._check(request, context)
        found = self.versions.get(request.version)
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no version {request.version}")
            raise AssertionError("abort raises")
        if found.stage == registry_pb2.MODEL_STAGE_FAILED:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "version failed to load")
        if self.production is not None and self.production != request.version:
            self.previous.append(self.production)
        return self._move(request.version, request.actor, request.reason)

    def Rollback(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        self._check(request, context)
        if not self.previous:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no earlier version to go back to")
        return self._move(self.previous.pop(), request.actor, request.reason)

    def _decided(self, request: Any, context: Any) -> None:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        self._check(request, context)
        if request.version != self.candidate:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not the candidate")
        self.versions[request.version].aliases.remove("candidate")
        self.candidate = None

    def Release(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._decided(request, context)
        if self.production is not None:
            self.previous.append(self.production)
        return self._move(request.version, request.actor, request.reason)

    def Refuse(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._decided(request, context)
        return registry_pb2.AliasChange(
            model_name=MODEL,
            alias="candidate",
            from_version=request.version,
            actor=request.actor,
            reason=request.reason,
            changed_at=stamp(T0),
        )

    def GetRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        if self.rollout is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{request.model_name} never had a rollout")
        return self.rollout

    def _roll(
        self, request: Any, context: Any, kind: registry_pb2.RolloutChangeKind.ValueType
    ) -> Any:
        """Change the rollout as the registry does, refusing a change meant for another rollout
        or taken at another step."""
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        self._check(request, context)
        rollout = self.rollout
        if rollout is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no rollout runs")
            raise AssertionError("abort raises")
        if request.rollout_id and request.rollout_id != rollout.rollout_id:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"the rollout is {rollout.rollout_id}"
            )
        if request.HasField("expect_step") and request.expect_step != rollout.step:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the rollout is at step {rollout.step}, not {request.expect_step}",
            )
        if kind == registry_pb2.ROLLOUT_CHANGE_KIND_ADVANCED and rollout.step + 1 == len(
            rollout.steps
        ):
            kind = registry_pb2.ROLLOUT_CHANGE_KIND_COMPLETED
        states = {
            registry_pb2.ROLLOUT_CHANGE_KIND_ADVANCED: registry_pb2.ROLLOUT_STATE_RUNNING,
            registry_pb2.ROLLOUT_CHANGE_KIND_PAUSED: registry_pb2.ROLLOUT_STATE_PAUSED,
            registry_pb2.ROLLOUT_CHANGE_KIND_RESUMED: registry_pb2.ROLLOUT_STATE_RUNNING,
            registry_pb2.ROLLOUT_CHANGE_KIND_COMPLETED: registry_pb2.ROLLOUT_STATE_COMPLETED,
            registry_pb2.ROLLOUT_CHANGE_KIND_ABORTED: registry_pb2.ROLLOUT_STATE_ABORTED,
        }
        if kind == registry_pb2.ROLLOUT_CHANGE_KIND_ADVANCED:
            rollout.step += 1
        rollout.state = states[kind]
        running = rollout.state == registry_pb2.ROLLOUT_STATE_RUNNING
        rollout.share = rollout.steps[rollout.step] if running else 0.0
        change = registry_pb2.RolloutChange(
            kind=kind,
            step=rollout.step,
            actor=request.actor,
            reason=request.reason,
            changed_at=stamp(T0 + timedelta(hours=1)),
            sequence=rollout.changes[-1].sequence + 1,
            request_id=request.request_id,
        )
        rollout.changes.append(change)
        return registry_pb2.RolloutChangeResponse(rollout=rollout, change=change)

    def AdvanceRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._roll(request, context, registry_pb2.ROLLOUT_CHANGE_KIND_ADVANCED)

    def PauseRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._roll(request, context, registry_pb2.ROLLOUT_CHANGE_KIND_PAUSED)

    def ResumeRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._roll(request, context, registry_pb2.ROLLOUT_CHANGE_KIND_RESUMED)

    def AbortRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._roll(request, context, registry_pb2.ROLLOUT_CHANGE_KIND_ABORTED)


def canary(candidate: int = 1, *, step: int = 1) -> Any:
    """A running canary of ``candidate`` beside production v2, at ``step`` of 5 %, 25 %, 100 %,
    started at :data:`T0` by the evaluator's approval and advanced since by the controller."""
    steps = [5.0, 25.0, 100.0]
    changes = [
        registry_pb2.RolloutChange(
            kind=registry_pb2.ROLLOUT_CHANGE_KIND_STARTED,
            actor="evaluator",
            reason="approved",
            changed_at=stamp(T0),
            sequence=7,
        )
    ]
    changes += [
        registry_pb2.RolloutChange(
            kind=registry_pb2.ROLLOUT_CHANGE_KIND_ADVANCED,
            step=n,
            actor="monitor",
            reason=f"step {n} held: 0 of 400 disagreed",
            changed_at=stamp(T0 + timedelta(minutes=10 * n)),
            sequence=7 + n,
        )
        for n in range(1, step + 1)
    ]
    return registry_pb2.Rollout(
        model_name=MODEL,
        rollout_id=f"v{candidate}-7",
        strategy=registry_pb2.ROLLOUT_STRATEGY_CANARY,
        state=registry_pb2.ROLLOUT_STATE_RUNNING,
        production_version=2,
        candidate_version=candidate,
        steps=steps,
        step=step,
        share=steps[step],
        lines=["line-3"],
        min_inspections=200,
        min_step_seconds=300,
        started_at=stamp(T0),
        step_started_at=stamp(T0 + timedelta(minutes=10 * step)),
        changes=changes,
    )


@dataclass
class FakePrometheus:
    """Prometheus's instant-query API: each query is answered the series set for the first
    metric name in :attr:`series` that it names (none: an empty vector), and kept with the time
    it was asked for; ``down`` answers 503 as a Prometheus still starting does."""

    series: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    queries: list[tuple[str, float]] = field(default_factory=list)
    down: bool = False

    def answer(self, query: str, at: float) -> tuple[int, dict[str, Any]]:
        self.queries.append((query, at))
        if self.down:
            return 503, {"status": "error", "errorType": "unavailable", "error": "not ready"}
        found = next((v for name, v in self.series.items() if name in query), [])
        result = [{"metric": labels, "value": [at, repr(value)]} for labels, value in found]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


@contextmanager
def serving_prometheus(fake: FakePrometheus) -> Iterator[str]:
    """``fake`` over HTTP on a free port of 127.0.0.1; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = parse_qs(parts.query)
            status, body = fake.answer(params["query"][0], float(params["time"][0]))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests' output is theirs."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Fakes:
    """One of each fake servicer, and the run records and reports the console reads."""

    gateway: FakeGateway = field(default_factory=FakeGateway)
    ingestion: FakeIngestion = field(default_factory=FakeIngestion)
    labeling: FakeLabeling = field(default_factory=FakeLabeling)
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    runs: FakeRuns = field(default_factory=lambda: FakeRuns())
    reports: FakeReports = field(default_factory=lambda: FakeReports())


def populated() -> Fakes:
    """Fakes holding a small pipeline's worth of data: what the pages are tested on."""
    fakes = Fakes()
    fakes.ingestion.versions = [dataset_version("screws", 1), dataset_version("screws", 2, 20)]
    fakes.labeling.tasks = {"screws": [label_task("screws", n, 3) for n in (1, 2, 3)]}
    fakes.labeling.queue = [review_item(7), review_item(8, 0.52)]
    fakes.registry.versions = {
        1: model_version(1),
        2: model_version(2),
        3: model_version(3, failed=True),
    }
    fakes.registry.production = 2
    fakes.registry.versions[2].aliases.append("production")
    fakes.registry.versions[2].stage = registry_pb2.MODEL_STAGE_PRODUCTION
    fakes.registry.previous = [1]
    fakes.runs.runs = [run_record("run-000000000002", epochs=6), run_record("run-000000000001", 4)]
    fakes.reports.reports[("screws", 1)] = ReportSummary(
        dataset_id="screws", version=1, passed=True, assertions=[]
    )
    fakes.reports.reports[("screws", 2)] = ReportSummary.model_validate(
        {
            "dataset_id": "screws",
            "version": 2,
            "passed": False,
            "assertions": [
                {"name": "class_balance", "passed": False, "message": "bad is 4% of images"},
                {"name": "min_images_per_class", "passed": True},
            ],
        }
    )
    fakes.reports.html_pages[("screws", 1)] = b"<html><body><h1>screws v1 passed</h1></body></html>"
    fakes.reports.gates["evaluations/eval-2.json"] = GateVerdict.model_validate(
        {
            "passed": True,
            "checks": [
                {"name": "accuracy", "passed": True, "observed": 0.92, "expected": "> 0.9"},
                {"name": "defect_recall", "passed": False, "observed": 0.8, "expected": ">= 0.9"},
                {"name": "roc_auc", "passed": True, "expected": ">= 0.9"},
            ],
            "gate": {"min_accuracy": 0.9},  # the rest of the report is not read
        }
    )
    return fakes


def run_record(run_id: str, epochs: int, status: RunStatus = "finished") -> RunRecord:
    return RunRecord(
        run_id=run_id,
        model_name=MODEL,
        status=status,
        params={"epochs": 10},
        seed=7,
        git_sha="abc123",
        packages={"tensorflow": "2.18"},
        dataset_id="screws",
        dataset_version=1,
        dataset_digest="d" * 64,
        split_key="screws/v1/split.json",
        split_counts={"train": 140, "validation": 30},
        cause_event_id="e" * 8,
        correlation_id="corr-1",
        attempts=1,
        epochs=[
            EpochRecord(
                epoch=n,
                metrics={
                    "loss": 1 / n,
                    "val_loss": 1.2 / n + 0.05,
                    "accuracy": 1 - 0.5 / n,
                    "val_accuracy": 0.95 - 0.5 / n,
                },
                ended_at=T0 + timedelta(seconds=10 * n),
            )
            for n in range(1, epochs + 1)
        ],
        metrics={"accuracy": 0.93, "auc": 0.97},
        best_epoch=epochs - 1 if epochs > 1 else None,
        training_seconds=61.5,
        **RunRecord.keys(run_id),
        started_at=T0,
        finished_at=T0 + timedelta(minutes=2),
    )


@dataclass
class FakeRuns:
    runs: list[RunRecord] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)

    async def list_runs(self, limit: int) -> list[RunRecord]:
        self.limits.append(limit)
        return self.runs[:limit]


@dataclass
class FakeReports:
    reports: dict[tuple[str, int], ReportSummary] = field(default_factory=dict)
    html_pages: dict[tuple[str, int], bytes] = field(default_factory=dict)
    gates: dict[str, GateVerdict] = field(default_factory=dict)

    async def summary(self, dataset_id: str, version: int) -> ReportSummary | None:
        return self.reports.get((dataset_id, version))

    async def html(self, dataset_id: str, version: int) -> bytes | None:
        return self.html_pages.get((dataset_id, version))

    async def gate(self, report_key: str) -> GateVerdict | None:
        return self.gates.get(report_key)


@contextmanager
def serving(fakes: Fakes) -> Iterator[str]:
    """The four fake servicers (and standard health) on one free port of 127.0.0.1."""
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    inspection_pb2_grpc.add_InspectionServiceServicer_to_server(fakes.gateway, server)
    ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(fakes.ingestion, server)
    labeling_pb2_grpc.add_LabelingServiceServicer_to_server(fakes.labeling, server)
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(fakes.registry, server)
    checks = health.HealthServicer()
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials())
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def closed_port() -> str:
    """An address where nothing listens."""
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    server.stop(None).wait()
    return f"127.0.0.1:{port}"
