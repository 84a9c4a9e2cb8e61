"""``screwops demo``: the main job, on the local stack, with live progress.

It renders the default synthetic dataset (once; later runs reuse it), imports it through the
ingestion service, and follows the pipeline run on Kafka by its correlation id, stage by stage,
as far as the installed services take it. Re-running it imports nothing new and replays the run
that already happened, so a second demo is fast.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table
from screwops.v1 import ingestion_pb2, ingestion_pb2_grpc
from screwops_contracts import EVENTS_BY_TOPIC, Event, Topic
from screwops_settings import StackSettings
from screwops_stack.supervisor import available
from screwops_synth import generate

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


def import_data(address: str, data: Path, dataset: str) -> tuple[ingestion_pb2.ImportResult, str]:
    """Import through the ingestion service; the run's correlation id comes with the version."""
    with grpc.insecure_channel(address) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        result = stub.Import(
            ingestion_pb2.ImportRequest(path=str(data.resolve()), dataset_id=dataset), timeout=600
        )
        version = stub.GetDataset(
            ingestion_pb2.GetDatasetRequest(dataset_id=dataset, version=result.dataset_version),
            timeout=30,
        )
    return result, version.correlation_id


async def follow(
    settings: StackSettings, correlation_id: str, console: Console, *, within: float
) -> Outcome:
    """Watch the run's events arrive, stage by stage, until it ends or ``within`` s pass."""
    installed = {spec.name for spec in available()}
    stages = [stage for stage in STAGES if stage[1] in installed]
    failures = {topic for _, _, bad in stages for topic in bad}
    consumer = AIOKafkaConsumer(
        *(topic for topic, _, _ in stages),
        *failures,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen: dict[str, Event[Any]] = {}
    began = time.monotonic()
    deadline = began + within
    await consumer.start()
    try:
        with console.status("waiting for dataset.ingested") as status:
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        event = EVENTS_BY_TOPIC[record.topic].model_validate_json(record.value)
                        if event.correlation_id != correlation_id or record.topic in seen:
                            continue
                        seen[record.topic] = event
                        console.print(
                            f"  [green]✓[/green] {record.topic:<20} from {event.producer}"
                        )
                        if record.topic in failures:
                            return Outcome(seen, event)
                pending = [topic for topic, _, _ in stages if topic not in seen]
                if not pending:
                    return Outcome(seen, None)
                status.update(f"waiting for {pending[0]} ({time.monotonic() - began:.0f}s)")
    finally:
        await consumer.stop()
    return Outcome(seen, None)


def run(settings: StackSettings, *, address: str, dataset: str, timeout: float) -> int:
    """The whole demo; returns the process exit code."""
    console = Console()
    began = time.monotonic()
    data = prepare_data(settings.home / "demo", console)
    result, correlation_id = import_data(address, data, dataset)
    state = "new version" if result.created else "nothing new: replaying the earlier run"
    console.print(
        f"imported into {dataset} v{result.dataset_version} ({state}): "
        f"{result.accepted_count} accepted, {result.duplicate_count} duplicates, "
        f"{result.refused_count} refused; run {correlation_id}"
    )
    outcome = asyncio.run(follow(settings, correlation_id, console, within=timeout))
    table = Table(title="where to look")
    table.add_column("what")
    table.add_column("where")
    table.add_row(
        "trace of this run", f"{settings.telemetry.jaeger_query_url}/search?service=ingestion"
    )
    table.add_row("metrics", f"{settings.telemetry.prometheus_url}/targets")
    table.add_row("artifacts", f"http://127.0.0.1:{settings.minio.console_port} (MinIO console)")
    table.add_row("datasets", "uv run screwops datasets list")
    console.print(table)
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
    console.print(f"[green]demo finished in {elapsed:.0f}s[/green]")
    return 0
