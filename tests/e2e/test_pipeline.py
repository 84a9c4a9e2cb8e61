"""The whole pipeline end to end on the real stack and the supervised services: rendered screws
are imported, labeled, validated, trained on, evaluated, registered and deployed to Triton, and
the gateway answers inspections with the deployed version, logging each one to Kafka.

Every event of the run is found by the run's correlation id, so runs that other tests start on
the same topics meanwhile do not confuse it.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from screwops.v1 import inspection_pb2, inspection_pb2_grpc, registry_pb2, registry_pb2_grpc
from screwops_contracts import Event, Topic, parse_event
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import MODEL_NAME
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings, kafka_client_options
from screwops_storage import ObjectStore
from screwops_synth import generate

from tests.e2e.conftest import screwops
from tests.support import eventually, unique

GATEWAY = "127.0.0.1:50051"
REGISTRY = "127.0.0.1:50054"
# The happy path of one run, in order; the other outcomes end it.
HAPPY = (
    Topic.DATASET_INGESTED,
    Topic.DATASET_LABELED,
    Topic.DATASET_VALIDATED,
    Topic.MODEL_TRAINED,
    Topic.MODEL_APPROVED,
    Topic.MODEL_DEPLOYED,
)
FAILED = (Topic.DATASET_REJECTED, Topic.MODEL_REJECTED)


async def run_events(
    settings: StackSettings, correlation_id: str, *, within: float
) -> dict[str, Event[Any]]:
    """Every happy-path event of the run, first of each type, once all of them arrived."""
    consumer = AIOKafkaConsumer(
        *HAPPY,
        *FAILED,
        Topic.INSPECTION_COMPLETED,
        **kafka_client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen: dict[str, Event[Any]] = {}
    await consumer.start()
    try:

        async def deployed() -> dict[str, Event[Any]] | None:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.topic == Topic.INSPECTION_COMPLETED:
                        continue
                    event = parse_event(record.topic, record.value)
                    if event is None or event.correlation_id != correlation_id:
                        continue
                    assert record.topic not in FAILED, f"the run ended in {event}"
                    seen.setdefault(record.topic, event)
            return seen if all(topic in seen for topic in HAPPY) else None

        return await eventually(deployed, within=within, what=f"model.deployed of {correlation_id}")
    finally:
        await consumer.stop()


async def inspection_logged(settings: StackSettings, request_ids: set[str]) -> set[str]:
    """The request ids among ``request_ids`` whose inspection.completed is on the topic."""
    consumer = AIOKafkaConsumer(
        Topic.INSPECTION_COMPLETED,
        **kafka_client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    found: set[str] = set()
    await consumer.start()
    try:

        async def all_found() -> set[str] | None:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    event = parse_event(record.topic, record.value)
                    if event is not None and event.payload.request_id in request_ids:
                        found.add(event.payload.request_id)
            return found if found == request_ids else None

        return await eventually(all_found, within=60, what="inspection.completed of each request")
    finally:
        await consumer.stop()


def samples(root: Path) -> list[tuple[Path, str]]:
    """Two held-out images per class folder of the rendered set, with their class."""
    chosen = []
    for folder in sorted((root / "test").iterdir()):
        for path in sorted(folder.glob("*.png"))[:2]:
            chosen.append((path, "GOOD" if folder.name == "good" else "DEFECT"))
    return chosen


@pytest.mark.usefixtures("services")
async def test_rendered_screws_go_all_the_way_to_a_served_model(tmp_path: Path) -> None:
    settings = StackSettings()
    dataset = unique("e2e-pipeline")
    root = tmp_path / "screws"
    # Screws never rendered before: the same images would reuse the run trained on them earlier.
    generate(root, good=100, defect=100, seed=secrets.randbelow(1 << 30), size=256)
    began = time.monotonic()

    imported = screwops("ingest", str(root), "--dataset", dataset)
    assert imported["accepted_count"] == "200"
    correlation_id = screwops("datasets", "show", dataset)["correlation_id"]
    events = await run_events(settings, correlation_id, within=900)
    # Records of different topics arrive in no set order; each stage happened after the last.
    assert set(events) == set(HAPPY)
    times = [events[topic].occurred_at for topic in HAPPY]
    assert times == sorted(times), times
    took = time.monotonic() - began
    print(f"pipeline run {correlation_id}: ingest to model.deployed in {took:.0f}s")

    trained, approved, deployed = (
        events[Topic.MODEL_TRAINED],
        events[Topic.MODEL_APPROVED],
        events[Topic.MODEL_DEPLOYED],
    )
    assert trained.payload.dataset_id == dataset
    assert approved.payload.run_id == trained.payload.run_id == deployed.payload.run_id
    assert [c.name for c in approved.payload.checks if not c.passed] == []
    version = deployed.payload.version
    assert deployed.payload.model_name == MODEL_NAME

    objects = ObjectStore.from_settings(settings.minio)
    assert await objects.exists(Bucket.MODELS, f"{trained.payload.artifact_key}/saved_model.pb"), (
        "the deployed run's SavedModel is in MinIO"
    )
    assert await objects.exists(Bucket.MODELS, approved.payload.report_key)

    async with open_aio_channel(REGISTRY) as channel:
        registry: Any = registry_pb2_grpc.RegistryServiceStub(channel)
        lineage = await registry.GetLineage(
            registry_pb2.GetLineageRequest(model_name=MODEL_NAME, version=version), timeout=30
        )
    assert (lineage.dataset_id, lineage.run_id) == (dataset, trained.payload.run_id)

    request_ids = set()
    async with open_aio_channel(GATEWAY) as channel:
        gateway: Any = inspection_pb2_grpc.InspectionServiceStub(channel)
        for path, truth in samples(root):
            request_id = unique("e2e-inspect")
            answer = await gateway.Inspect(
                inspection_pb2.InspectRequest(
                    image=path.read_bytes(),
                    line_id="line-e2e",
                    camera_id="cam-1",
                    request_id=request_id,
                    model_version=version,
                ),
                timeout=30,
            )
            request_ids.add(request_id)
            assert answer.model_version == version
            assert answer.model_name == MODEL_NAME
            verdict = inspection_pb2.Verdict.Name(answer.verdict).removeprefix("VERDICT_")
            probability = answer.defect_probability
            print(f"{path.parent.name}/{path.name}: {verdict} ({truth}) p={probability:.3f}")
    assert await inspection_logged(settings, request_ids) == request_ids
