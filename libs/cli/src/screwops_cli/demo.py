"""``screwops demo``: the main job, on the local stack, with live progress.

It renders the default synthetic dataset (once; later runs reuse it), imports it through the
ingestion service, and follows the pipeline run on Kafka by its correlation id, stage by stage,
as far as the installed services take it. Re-running it imports nothing new and replays the run
that already happened, so a second demo is fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table
from screwops.v1 import ingestion_pb2, ingestion_pb2_grpc, inspection_pb2, inspection_pb2_grpc
from screwops_contracts import Event, Topic, parse_event
from screwops_rpc import open_channel
from screwops_settings import StackSettings, console_admin_password_file, kafka_client_options
from screwops_stack.supervisor import available
from screwops_synth import generate

from screwops_cli.runs import RunStore, epoch_figures, mongo_store

# The happy path, in order, with the service that takes each step and the events that end it
# badly. The demo waits for the stages whose producer is installed.
STAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (Topic.DATASET_INGESTED, "ingestion", ()),
    (Topic.DATASET_LABELED, "labeling", ()),
    (Topic.DATASET_VALIDATED, "validation", (Topic.DATASET_REJECTED,)),
    (Topic.MODEL_TRAINED, "trainer", ()),
    (Topic.MODEL_APPROVED, "evaluator", (Topic.MODEL_REJECTED,)),
    (Topic.MODEL_DEPLOYED, "registry", ()),
)


@dataclass(frozen=True)
class Outcome:
    """How far the run got: the events seen by topic, and the failing one if any."""

    seen: dict[str, Event[Any]]
    failure: Event[Any] | None
    trace_id: str | None


def prepare_data(root: Path, console: Console) -> Path:
    """The default dataset (300 good, 300 defective, 256 px, seed 7), rendered once."""
    data = root / "screws"
    if (data / "train").is_dir():
        console.print(f"reusing the rendered dataset in {data}")
        return data
    console.print("rendering the default synthetic dataset (600 screws, 256x256)...")
    summary = generate(data, good=300, defect=300, seed=7, size=256)
    console.print(f"rendered {summary.images} images in {summary.seconds:.1f}s")
    return data


def held_out(root: Path) -> dict[str, list[Path]]:
    """Screws the model never saw (another seed), by class folder, for the inspections."""
    data = root / "held-out"
    if not (data / "train").is_dir():
        generate(data, good=HELD_OUT_GOOD, defect=HELD_OUT_DEFECT, seed=HELD_OUT_SEED, size=256)
    by_class: dict[str, list[Path]] = {}
    for split in ("train", "test"):
        for folder in sorted((data / split).iterdir()):
            by_class.setdefault(folder.name, []).extend(sorted(folder.glob("*.png")))
    return {name: paths[:SHOWN_PER_CLASS] for name, paths in sorted(by_class.items())}


def import_data(
    address: str, data: Path, dataset: str, token: str | None = None
) -> tuple[ingestion_pb2.ImportResult, str]:
    """Import through the ingestion service; the run's correlation id comes with the version."""
    with open_channel(address, token) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        result = stub.Import(
            ingestion_pb2.ImportRequest(path=str(data.resolve()), dataset_id=dataset), timeout=600
        )
        version = stub.GetDataset(
            ingestion_pb2.GetDatasetRequest(dataset_id=dataset, version=result.dataset_version),
            timeout=30,
        )
    return result, version.correlation_id


async def training_progress(store: RunStore, dataset: str, correlation_id: str) -> str:
    """The run's latest epoch, as the trainer records it while it trains; empty before."""
    runs = await store.list_runs(dataset_id=dataset, limit=5)
    run = next((r for r in runs if r.correlation_id == correlation_id), None)
    if run is None or not run.epochs:
        return ""
    return f", epoch {len(run.epochs)}/{run.params.get('epochs', '?')}: {epoch_figures(run)}"


async def follow(
    settings: StackSettings,
    dataset: str,
    correlation_id: str,
    console: Console,
    *,
    within: float,
) -> Outcome:
    """Watch the run's events arrive, stage by stage, until it ends or ``within`` s pass; while
    the trainer trains, show its epochs as it records them."""
    installed = {spec.name for spec in available()}
    stages = [stage for stage in STAGES if stage[1] in installed]
    failures = {topic for _, _, bad in stages for topic in bad}
    consumer = AIOKafkaConsumer(
        *(topic for topic, _, _ in stages),
        *failures,
        **kafka_client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    deadline = time.monotonic() + within
    await consumer.start()
    try:
        async with mongo_store() as store:
            return await _watch(consumer, stages, store, dataset, correlation_id, console, deadline)
    finally:
        await consumer.stop()


async def _watch(
    consumer: AIOKafkaConsumer,
    stages: list[tuple[str, str, tuple[str, ...]]],
    store: RunStore,
    dataset: str,
    correlation_id: str,
    console: Console,
    deadline: float,
) -> Outcome:
    failures = {topic for _, _, bad in stages for topic in bad}
    seen: dict[str, Event[Any]] = {}
    trace_id: str | None = None
    began = time.monotonic()
    with console.status("waiting for dataset.ingested") as status:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    event = parse_event(record.topic, record.value)
                    if event is None or event.correlation_id != correlation_id:
                        continue
                    if record.topic in seen:
                        continue
                    seen[record.topic] = event
                    trace_id = trace_id or _trace_id(record.headers)
                    console.print(f"  [green]✓[/green] {record.topic:<20} from {event.producer}")
                    if record.topic in failures:
                        return Outcome(seen, event, trace_id)
            pending = [topic for topic, _, _ in stages if topic not in seen]
            if not pending:
                return Outcome(seen, None, trace_id)
            progress = ""
            if pending[0] == Topic.MODEL_TRAINED:
                progress = await training_progress(store, dataset, correlation_id)
            status.update(f"waiting for {pending[0]} ({time.monotonic() - began:.0f}s{progress})")
    return Outcome(seen, None, trace_id)


def _trace_id(headers: Sequence[tuple[str, bytes]]) -> str | None:
    """The trace id in a record's W3C ``traceparent`` header (version-traceid-spanid-flags)."""
    value = dict(headers).get("traceparent")
    parts = value.decode(errors="replace").split("-") if value else []
    return parts[1] if len(parts) == 4 else None


# Held-out screws the demo shows the served model: a few per class, rendered with another seed.
SHOWN_PER_CLASS = 2
HELD_OUT_SEED = 8
HEADLINE_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
HELD_OUT_GOOD = 4
HELD_OUT_DEFECT = 10


def _figure(metrics: dict[str, float], name: str) -> str:
    """``name value``, with its 95 % interval where the evaluator gave one."""
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    interval = "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"
    return f"{name} {metrics[name]:.3f}{interval}"


@dataclass(frozen=True)
class Shown:
    """One inspection the demo made: the file, its true class and the gateway's answer."""

    path: Path
    truth: str
    answer: inspection_pb2.InspectResponse | None
    error: str | None


def inspect_samples(
    gateway: str, samples: dict[str, list[Path]], version: int, *, token: str | None, within: float
) -> list[Shown]:
    """Inspect held-out screws of each class through the gateway, unpinned, once the gateway
    serves ``version`` as production (it switches after Triton's warm-up)."""
    chosen = [
        (path, "GOOD" if name == "good" else "DEFECT")
        for name, paths in samples.items()
        for path in paths
    ]
    with open_channel(gateway, token) as channel:
        stub = inspection_pb2_grpc.InspectionServiceStub(channel)

        def inspect(path: Path) -> inspection_pb2.InspectResponse:
            request = inspection_pb2.InspectRequest(
                image=path.read_bytes(), line_id="demo-line", camera_id="demo-cam"
            )
            answer: inspection_pb2.InspectResponse = stub.Inspect(request, timeout=30)
            return answer

        deadline = time.monotonic() + within
        while True:
            try:
                if inspect(chosen[0][0]).model_version >= version:
                    break
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:  # nothing deployed yet
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway did not serve version {version} in {within:.0f}s")
            time.sleep(0.5)
        shown = []
        for path, truth in chosen:
            try:
                shown.append(Shown(path, truth, inspect(path), None))
            except grpc.RpcError as error:
                shown.append(Shown(path, truth, None, f"{error.code().name}: {error.details()}"))
    return shown


def show(shown: list[Shown], root: Path, console: Console) -> None:
    """The verdicts, beside each screw's true class."""
    table = Table(title="held-out screws inspected through the gateway")
    for column in ("held-out image", "truth", "verdict", "p(defect)", "version", "ms"):
        table.add_column(column)
    for item in shown:
        name = str(item.path.relative_to(root / "held-out"))
        if item.answer is None:
            table.add_row(name, item.truth, f"[red]{item.error}[/red]", "", "", "")
            continue
        answer = item.answer
        verdict = inspection_pb2.Verdict.Name(answer.verdict).removeprefix("VERDICT_")
        colour = "green" if verdict == item.truth else "yellow"
        table.add_row(
            name,
            item.truth,
            f"[{colour}]{verdict}[/{colour}]",
            f"{answer.defect_probability:.3f}",
            f"v{answer.model_version}",
            f"{answer.timings.total_ms:.1f}",
        )
    console.print(table)


def where_to_look(settings: StackSettings, trace_id: str | None) -> Table:
    """Where a user looks next: the run's trace, metrics, artifacts, the console, the CLI."""
    table = Table(title="where to look")
    table.add_column("what")
    table.add_column("where")
    jaeger = settings.telemetry.jaeger_query_url
    table.add_row(
        "trace of this run",
        f"{jaeger}/trace/{trace_id}" if trace_id else f"{jaeger}/search",
    )
    table.add_row("metrics", f"{settings.telemetry.prometheus_url}/targets")
    table.add_row("artifacts", f"http://127.0.0.1:{settings.minio.console_port} (MinIO console)")
    web = next((spec for spec in available() if spec.name == "console" and spec.http_port), None)
    if web is not None:
        password = console_admin_password_file(settings.home)
        table.add_row(
            "web console",
            f"http://127.0.0.1:{web.http_port} (admin's password: {password})",
        )
    table.add_row("the command line", "uv run screwops datasets list / runs list / models list")
    return table


def run(
    settings: StackSettings,
    *,
    address: str,
    dataset: str,
    timeout: float,
    gateway: str,
    ingestion_token: str | None = None,
    gateway_token: str | None = None,
) -> int:
    """The whole demo; returns the process exit code."""
    console = Console()
    began = time.monotonic()
    demo_root = settings.home / "demo"
    data = prepare_data(demo_root, console)
    result, correlation_id = import_data(address, data, dataset, ingestion_token)
    state = "new version" if result.created else "nothing new: replaying the earlier run"
    console.print(
        f"imported into {dataset} v{result.dataset_version} ({state}): "
        f"{result.accepted_count} accepted, {result.duplicate_count} duplicates, "
        f"{result.refused_count} refused; run {correlation_id}"
    )
    outcome = asyncio.run(follow(settings, dataset, correlation_id, console, within=timeout))
    console.print(where_to_look(settings, outcome.trace_id))
    elapsed = time.monotonic() - began
    if outcome.failure is not None:
        console.print(
            f"[red]the run ended in {outcome.failure.type}[/red]: {outcome.failure.payload}"
        )
        return 1
    installed = {spec.name for spec in available()}
    missing = [t for t, producer, _ in STAGES if producer in installed and t not in outcome.seen]
    if missing:
        console.print(f"[red]timed out after {elapsed:.0f}s waiting for {missing[0]}[/red]")
        return 1
    approved = outcome.seen.get(Topic.MODEL_APPROVED)
    if approved is not None:
        metrics = approved.payload.metrics
        figures = ", ".join(_figure(metrics, k) for k in HEADLINE_METRICS if k in metrics)
        console.print(
            f"approved on the test split at threshold {approved.payload.threshold:.4g} "
            f"({approved.payload.model_kind}, chosen on validation): {figures}"
        )
    deployed = outcome.seen.get(Topic.MODEL_DEPLOYED)
    if deployed is not None and "gateway" in installed:
        try:
            samples = held_out(demo_root)
            shown = inspect_samples(
                gateway, samples, deployed.payload.version, token=gateway_token, within=120
            )
        except (grpc.RpcError, TimeoutError) as error:
            console.print(f"[red]the gateway did not answer: {error}[/red]")
            return 1
        show(shown, demo_root, console)
        if any(item.answer is None for item in shown):
            console.print("[red]an inspection failed[/red]")
            return 1
        right = sum(
            inspection_pb2.Verdict.Name(item.answer.verdict).endswith(item.truth)
            for item in shown
            if item.answer is not None
        )
        console.print(f"{right} of {len(shown)} held-out screws judged right")
    console.print(f"[green]demo finished in {time.monotonic() - began:.0f}s[/green]")
    return 0
