"""Every consuming service is killed (SIGKILL) while the stage of a running pipeline that it owns
is under way, and restarted by the supervisor: the run still ends deployed, with exactly one
dataset version, training run, model version and deployment, and the gateway serves it."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_contracts import EVENTS_BY_TOPIC, Topic
from screwops_settings import StackSettings
from screwops_storage import database
from screwops_synth import generate
from screwops_trainer.store import RUNS

from tests.chaos.conftest import crash_service
from tests.e2e.conftest import screwops
from tests.e2e.runs import GATEWAY
from tests.e2e.test_pipeline import FAILED, HAPPY
from tests.support import eventually, png, unique

# The event each service consumes; it is killed as soon as the run's event appears, so the kill
# lands before, while or just after it handles it. The trainer, whose stage is long, is killed
# only once its run has finished an epoch: in the middle of training.
KILLED_ON = {
    Topic.DATASET_INGESTED: ("labeling",),
    Topic.DATASET_LABELED: ("validation",),
    Topic.MODEL_TRAINED: ("evaluator",),
    Topic.MODEL_APPROVED: ("registry",),
    Topic.MODEL_DEPLOYED: ("gateway", "monitor"),
}
RUN_WITHIN_S = 900.0


def order(item: tuple[str, float]) -> float:
    return item[1]


async def kill_mid_training(settings: StackSettings, dataset: str) -> float:
    """Wait for the run on ``dataset`` to finish its first epoch, then kill the trainer."""
    db = database(settings.mongo, appname="chaos")
    try:

        async def training() -> dict[str, Any] | None:
            run = await db[RUNS].find_one({"dataset_id": dataset, "status": "running"})
            return run if run is not None and run.get("epochs") else None

        await eventually(training, within=RUN_WITHIN_S, what=f"a run on {dataset} training")
        crash_service(settings, "trainer")
        return time.monotonic()
    finally:
        db.client.close()


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(1500)
async def test_each_service_killed_mid_stage(tmp_path: Path) -> None:
    settings = StackSettings()
    dataset = unique("chaos-crash")
    root = tmp_path / "screws"
    generate(root, good=100, defect=100, seed=secrets.randbelow(1 << 30), size=256)
    consumer = AIOKafkaConsumer(
        *HAPPY,
        *FAILED,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: dict[str, list[str]] = {}
    killed: dict[str, float] = {}
    began = time.monotonic()
    try:

        async def positioned() -> bool | None:
            return True if consumer.assignment() else None

        await eventually(positioned, within=30, what="the watcher's partitions")
        for partition in consumer.assignment():
            await consumer.position(partition)  # fixes "latest" before the run begins
        trainer = asyncio.create_task(kill_mid_training(settings, dataset))
        await asyncio.to_thread(screwops, "ingest", str(root), "--dataset", dataset)
        correlation_id = (await asyncio.to_thread(screwops, "datasets", "show", dataset))[
            "correlation_id"
        ]

        async def deployed() -> bool | None:
            batch = await consumer.getmany(timeout_ms=500)
            for record in (r for rs in batch.values() for r in rs):
                event = EVENTS_BY_TOPIC[record.topic].model_validate_json(record.value)
                if event.correlation_id != correlation_id:
                    continue
                assert record.topic not in FAILED, f"the run ended in {event}"
                records.setdefault(record.topic, []).append(str(event.event_id))
                for name in KILLED_ON.get(Topic(record.topic), ()):
                    if name not in killed:
                        crash_service(settings, name)
                        killed[name] = time.monotonic() - began
            return True if all(t in records for t in HAPPY) else None

        await eventually(deployed, within=RUN_WITHIN_S, what=f"{correlation_id} deployed")
        killed["trainer"] = await trainer - began
    finally:
        await consumer.stop()
    took = time.monotonic() - began

    # Exactly one of everything: a redelivered event carries its first id, and nothing was
    # done twice under a new one.
    assert {topic: len(set(ids)) for topic, ids in records.items()} == dict.fromkeys(HAPPY, 1)
    versions = [v for v in screwops("datasets", "list")["versions"] if v["dataset_id"] == dataset]
    assert len(versions) == 1
    runs = [r for r in screwops("runs", "list") if r["dataset_id"] == dataset]
    assert [r["status"] for r in runs] == ["finished"]
    models = [m for m in screwops("models", "list")["model_versions"] if m["dataset_id"] == dataset]
    assert len(models) == 1
    version = int(models[0]["version"])

    # The restarted gateway serves the deployed version to requests that name none.
    async with grpc.aio.insecure_channel(GATEWAY) as channel:
        gateway: Any = inspection_pb2_grpc.InspectionServiceStub(channel)

        async def serving() -> int | None:
            try:
                answer = await gateway.Inspect(
                    inspection_pb2.InspectRequest(
                        image=png(256), line_id="line-chaos", camera_id="cam-1"
                    ),
                    timeout=10,
                )
            except grpc.aio.AioRpcError:
                return None
            return answer.model_version if answer.model_version == version else None

        await eventually(serving, within=60, what=f"the gateway serving version {version}")
    duplicates = {t: len(ids) - 1 for t, ids in records.items() if len(ids) > 1}
    print(
        f"run {correlation_id}: deployed as version {version} in {took:.0f}s; killed "
        + ", ".join(
            f"{name} at {at:.1f}s" for name, at in sorted(killed.items(), key=lambda i: i[1])
        )
        + f"; training attempts {runs[0]['attempts']}; redelivered records {duplicates or 'none'}"
    )
    assert set(killed) == {
        "labeling",
        "validation",
        "trainer",
        "evaluator",
        "registry",
        "gateway",
        "monitor",
    }
    assert runs[0]["attempts"] >= 2, "the trainer was killed mid-run, so the run started again"
