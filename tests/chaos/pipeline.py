"""One pipeline run driven through the real CLI while a scenario breaks something, and the checks
every scenario ends with: the run deployed exactly once, and the gateway serves it."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_contracts import Topic, parse_event
from screwops_contracts.datasets import Bucket
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings, kafka_client_options
from screwops_storage import ObjectStore
from screwops_synth import generate

from tests.e2e.conftest import screwops
from tests.e2e.runs import GATEWAY
from tests.e2e.test_pipeline import FAILED, HAPPY
from tests.support import eventually, screw_png

RUN_WITHIN_S = 900.0
# Called with each of the run's topics the first time an event of it appears.
OnEvent = Callable[[Topic], Awaitable[None]]


@dataclass(frozen=True)
class Run:
    """What a run left behind: its ids and every event id seen per topic."""

    dataset: str
    correlation_id: str
    events: dict[str, list[str]]
    seconds: float

    @property
    def redelivered(self) -> dict[str, int]:
        """Records read more than once per topic (at-least-once delivery, same event id)."""
        return {t: len(ids) - 1 for t, ids in self.events.items() if len(ids) > 1}


async def run_pipeline(tmp_path: Path, dataset: str, on_event: OnEvent) -> Run:
    """Render 200 screws never seen before (a seen set would reuse its old run), import them
    with ``screwops ingest`` and follow the run to ``model.deployed``, calling ``on_event``."""
    settings = StackSettings()
    root = tmp_path / "screws"
    generate(root, good=100, defect=100, seed=secrets.randbelow(1 << 30), size=256)
    consumer = AIOKafkaConsumer(
        *HAPPY,
        *FAILED,
        **kafka_client_options(settings.kafka),
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    events: dict[str, list[str]] = {}
    began = time.monotonic()
    try:

        async def positioned() -> bool | None:
            return True if consumer.assignment() else None

        await eventually(positioned, within=30, what="the watcher's partitions")
        for partition in consumer.assignment():
            await consumer.position(partition)  # fixes "latest" before the run begins
        await asyncio.to_thread(screwops, "ingest", str(root), "--dataset", dataset)
        shown = await asyncio.to_thread(screwops, "datasets", "show", dataset)
        correlation_id = shown["correlation_id"]

        async def deployed() -> bool | None:
            batch = await consumer.getmany(timeout_ms=500)
            for record in (r for rs in batch.values() for r in rs):
                event = parse_event(record.topic, record.value)
                if event is None or event.correlation_id != correlation_id:
                    continue
                assert record.topic not in FAILED, f"the run ended in {event}"
                first = record.topic not in events
                events.setdefault(record.topic, []).append(str(event.event_id))
                if first:
                    await on_event(Topic(record.topic))
            return True if all(t in events for t in HAPPY) else None

        await eventually(deployed, within=RUN_WITHIN_S, what=f"{correlation_id} deployed")
    finally:
        await consumer.stop()
    return Run(dataset, correlation_id, events, time.monotonic() - began)


async def deployed_once(run: Run) -> dict[str, Any]:
    """Check the run left exactly one of everything, each pointing at objects that exist, and
    that the gateway serves its version; the model version's record."""
    # A redelivered event carries its first id: nothing was done twice under a new one.
    assert {topic: len(set(ids)) for topic, ids in run.events.items()} == dict.fromkeys(HAPPY, 1)
    [dataset] = [
        v for v in screwops("datasets", "list")["versions"] if v["dataset_id"] == run.dataset
    ]
    runs = [r for r in screwops("runs", "list") if r["dataset_id"] == run.dataset]
    assert [r["status"] for r in runs] == ["finished"]
    [model] = [
        m for m in screwops("models", "list")["model_versions"] if m["dataset_id"] == run.dataset
    ]
    assert model["run_id"] == runs[0]["run_id"]

    # Nothing half-written: every record's object is in MinIO.
    objects = ObjectStore.from_settings(StackSettings().minio)
    for bucket, key in (
        (Bucket.DATASETS, dataset["manifest_key"]),
        (Bucket.DATASETS, runs[0]["split_key"]),
        (Bucket.MODELS, f"{runs[0]['artifact_key']}/saved_model.pb"),
        (Bucket.MODELS, runs[0]["history_key"]),
        (Bucket.MODELS, runs[0]["record_key"]),
    ):
        assert await objects.exists(bucket, key), f"{bucket}/{key} is missing"

    version = int(model["version"])
    await served(version, within=60)
    return {"version": version, "attempts": runs[0]["attempts"]}


async def served(version: int, *, within: float) -> float:
    """Wait for the gateway to answer with ``version``; seconds it took."""
    began = time.monotonic()
    async with open_aio_channel(GATEWAY) as channel:
        gateway: Any = inspection_pb2_grpc.InspectionServiceStub(channel)

        async def serving() -> int | None:
            try:
                answer = await gateway.Inspect(
                    inspection_pb2.InspectRequest(
                        image=screw_png(0), line_id="line-chaos", camera_id="cam-1"
                    ),
                    timeout=10,
                )
            except grpc.aio.AioRpcError:
                return None
            return answer.model_version if answer.model_version == version else None

        await eventually(serving, within=within, what=f"the gateway serving version {version}")
    return time.monotonic() - began
