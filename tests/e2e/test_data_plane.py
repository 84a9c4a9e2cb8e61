"""The data plane end to end: render screws, import them, and follow the events to a validated
(or rejected) dataset version, checking what lands in MongoDB, MinIO and on the topics."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from motor.motor_asyncio import AsyncIOMotorClient
from screwops_contracts import DatasetRejected, DatasetValidated, Topic
from screwops_contracts.datasets import Bucket, Split, version_prefix
from screwops_settings import StackSettings, kafka_client_options
from screwops_storage import ObjectStore
from screwops_synth import generate

from tests.e2e.conftest import screwops
from tests.support import eventually, unique


async def outcome(settings: StackSettings, dataset: str) -> DatasetValidated | DatasetRejected:
    """The validation verdict for ``dataset``, read from the real topics."""
    consumer = AIOKafkaConsumer(
        Topic.DATASET_VALIDATED,
        Topic.DATASET_REJECTED,
        **kafka_client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:

        async def find() -> DatasetValidated | DatasetRejected | None:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    if record.key != dataset.encode():
                        continue
                    if tp.topic == Topic.DATASET_VALIDATED:
                        return DatasetValidated.model_validate_json(record.value)
                    return DatasetRejected.model_validate_json(record.value)
            return None

        return await eventually(find, within=180, what=f"validation verdict for {dataset}")
    finally:
        await consumer.stop()


@pytest.mark.usefixtures("services")
async def test_rendered_screws_become_a_validated_dataset_version(tmp_path: Path) -> None:
    settings = StackSettings()
    dataset = unique("e2e")
    # The trainer trains this version too: the session's other runs are 256 px, and one model
    # name serves one frame size (the registry refuses a version of another).
    summary = generate(tmp_path / "screws", good=60, defect=60, seed=11, size=256)
    assert summary.images == 120

    imported = screwops("ingest", str(tmp_path / "screws"), "--dataset", dataset)
    assert (imported["accepted_count"], imported.get("refused_count", 0)) == ("120", 0)

    verdict = await outcome(settings, dataset)
    assert isinstance(verdict, DatasetValidated), verdict
    counts = verdict.payload.split_counts
    assert counts.train + counts.validation + counts.test == 120
    assert verdict.correlation_id == screwops("datasets", "show", dataset)["correlation_id"]

    objects = ObjectStore.from_settings(settings.minio)
    split = Split.model_validate_json(
        await objects.get_verified(Bucket.DATASETS, verdict.payload.split_key)
    )
    assert len(split.assignments) == 120
    prefix = version_prefix(dataset, 1)
    assert await objects.exists(Bucket.DATASETS, f"{prefix}/labels.json")
    assert await objects.exists(Bucket.DATASETS, verdict.payload.report_html_key)

    mongo: AsyncIOMotorClient[Any] = AsyncIOMotorClient(settings.mongo.uri.get_secret_value())
    try:
        db = mongo[settings.mongo.database]
        version = await db.dataset_versions.find_one({"_id": f"{dataset}@v1"})
        report = await db.validation_reports.find_one({"_id": f"{dataset}@v1"})
    finally:
        mongo.close()
    assert version is not None
    assert "outbox" not in version, "its dataset.ingested was acknowledged"
    assert report is not None


@pytest.mark.usefixtures("services")
async def test_a_poisoned_set_is_rejected_naming_each_problem(tmp_path: Path) -> None:
    settings = StackSettings()
    dataset = unique("e2e-poison")
    generate(tmp_path / "screws", good=40, defect=5, seed=12, size=256)
    broken = next((tmp_path / "screws" / "train" / "good").iterdir())
    broken.write_bytes(broken.read_bytes()[:120])
    shutil.copy(
        next((tmp_path / "screws" / "test" / "good").iterdir()),
        tmp_path / "screws" / "train" / "good" / "copy.png",
    )

    imported = screwops("ingest", str(tmp_path / "screws"), "--dataset", dataset)
    refused = [f for f in imported["files"] if f["status"] == "FILE_STATUS_REFUSED"]
    assert [f["filename"] for f in refused] == [f"train/good/{broken.name}"]
    assert refused[0]["reason"].startswith("corrupt or truncated PNG")

    verdict = await outcome(settings, dataset)
    assert isinstance(verdict, DatasetRejected), verdict
    failed = {f.name: f for f in verdict.payload.failures}
    assert "min_images_per_class" in failed
    assert failed["min_images_per_class"].observed == 5
    assert "enough_for_model" in failed
