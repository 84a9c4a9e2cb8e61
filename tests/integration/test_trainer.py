"""The trainer on the real stack: synthetic screws staged in MinIO, validated by the real
validation service, trained on by the real trainer (a real, small TensorFlow run), and the run
read back from Kafka (``model.trained``), MinIO (a SavedModel that loads and serves) and FerretDB
(the run with its epochs). A second announcement of the same data is answered from the finished
run, without training again.

Both services run in-process, wired as their ``__main__`` wires them, except that their buses
use this test's own topics (:class:`RoutedBus`) and database. The images carry this run's id in
a PNG text chunk, so their bytes, the dataset's digest and so the run id are this run's alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from minio import Minio
from motor.motor_asyncio import AsyncIOMotorDatabase
from PIL import Image
from screwops_cli.runs import MongoRuns
from screwops_contracts import (
    DatasetLabeled,
    DatasetValidated,
    Event,
    Topic,
    TrainingRequested,
    TrainingRequestedPayload,
)
from screwops_contracts.datasets import Bucket, Label
from screwops_contracts.events import ModelTrained
from screwops_contracts.models import (
    FRAMES_INPUT,
    MODEL_NAME,
    PART_FOUND_OUTPUT,
    PROBABILITY_OUTPUT,
    SERVING_SIGNATURE,
    run_prefix,
    saved_model_prefix,
)
from screwops_contracts.runs import RUNS
from screwops_imaging import decode, fit_frame
from screwops_settings import StackSettings
from screwops_storage import ObjectStore, content_key, sha256_hex
from screwops_synth import generate
from screwops_trainer import handlers as trainer_handlers
from screwops_trainer.config import Rules
from screwops_trainer.model import configure_tensorflow, fit
from screwops_trainer.params import TrainingParams
from screwops_trainer.provenance import git_sha, package_versions
from screwops_trainer.scoring import score_saved_model
from screwops_trainer.service import TrainerService
from screwops_trainer.store import MongoTrainerStore
from screwops_validation import handlers as validation_handlers
from screwops_validation.config import Rules as ValidationRules
from screwops_validation.service import ValidationService
from screwops_validation.store import MongoValidationStore

from tests.integration.routing import RoutedBus, RoutedReader, routed_topics, service_bus
from tests.support import eventually, minio_client, remove_objects, unique
from tests.unit.validation.builders import File, encode, stage_version

PARAMS = TrainingParams(epochs=2, batch_size=8, filters=(8, 16), patience=2)
TOPICS = (
    Topic.DATASET_LABELED,
    Topic.DATASET_VALIDATED,
    Topic.DATASET_REJECTED,
    Topic.TRAINING_REQUESTED,
    Topic.MODEL_DEGRADED,
    Topic.MODEL_TRAINED,
)


def screws(root: Path, run: str) -> list[File]:
    """24 good and 24 defective synthetic screws (128 px), their bytes made this run's own."""
    generate(root, good=24, defect=24, seed=11, size=128)
    files = []
    for path in sorted(root.glob("*/*/*.png")):
        if path.parts[-3] == "ground_truth":
            continue
        folder = path.parent.name
        with Image.open(path) as image:
            data = encode(np.asarray(image.convert("L")), note=run)
        name = f"{path.parts[-3]}/{folder}/{path.name}"
        if folder == "good":
            files.append(File(name, data, Label.GOOD))
        else:
            files.append(File(name, data, Label.BAD, folder))
    return files


class Announcements(RoutedReader):
    """Reads ``model.trained`` (and ``dataset.validated``) from this test's routed topics."""

    def __init__(self, settings: StackSettings, routes: dict[str, str]) -> None:
        super().__init__(
            settings,
            routes,
            {Topic.MODEL_TRAINED: ModelTrained, Topic.DATASET_VALIDATED: DatasetValidated},
        )
        self.seen: list[Event[Any]] = []

    async def trained(self, count: int, *, within: float) -> list[ModelTrained]:
        """The first ``count`` ``model.trained`` events (waiting for them as needed)."""

        async def probe() -> list[ModelTrained] | None:
            self.seen.extend(await self.read())
            found = [e for e in self.seen if isinstance(e, ModelTrained)]
            return found[:count] if len(found) >= count else None

        return await eventually(probe, within=within, what=f"{count} model.trained event(s)")

    def validated(self) -> list[DatasetValidated]:
        return [e for e in self.seen if isinstance(e, DatasetValidated)]


@dataclass
class Stack:
    objects: ObjectStore
    s3: Minio
    db: AsyncIOMotorDatabase[Any]
    validation_bus: RoutedBus
    trainer_bus: RoutedBus
    announcements: Announcements
    prefixes: list[tuple[str, str]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    async def stage(self, files: list[File]) -> tuple[str, DatasetLabeled]:
        dataset_id = unique("it-train")
        self.prefixes.append((Bucket.DATASETS, f"{dataset_id}/"))
        self.images.extend(content_key("raw", sha256_hex(f.data)) for f in files)
        return dataset_id, await stage_version(self.objects, dataset_id, files)

    def remove_everything_staged(self) -> None:
        for bucket, prefix in self.prefixes:
            remove_objects(self.s3, bucket, prefix)
        remove_objects(self.s3, Bucket.IMAGES, *self.images)


@pytest.fixture
async def routes(settings: StackSettings) -> AsyncIterator[dict[str, str]]:
    async for routes in routed_topics(settings, TOPICS, "it-trainer"):
        yield routes


@pytest.fixture
async def stack(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any], routes: dict[str, str]
) -> AsyncIterator[Stack]:
    s3 = minio_client(settings.minio)
    objects = ObjectStore(s3)
    await objects.ensure_buckets(Bucket.IMAGES, Bucket.DATASETS, Bucket.MODELS)
    # Each service's own wiring (see their __main__), on this test's own topics.
    validation_bus = service_bus(settings, "it-validation", mongo_db, routes, max_wait=0.2)
    validation_store = MongoValidationStore(mongo_db)
    await validation_store.ensure_indexes()
    validation_handlers.register(
        validation_bus,
        ValidationService(validation_store, objects, validation_bus.emit, rules=ValidationRules()),
    )
    configure_tensorflow(intra_op_threads=2, inter_op_threads=1)
    trainer_bus = service_bus(settings, "it-trainer", mongo_db, routes, max_wait=0.2)
    trainer_store = MongoTrainerStore(mongo_db)
    await trainer_store.ensure_indexes()
    trainer_handlers.register(
        trainer_bus,
        TrainerService(
            trainer_store,
            objects,
            trainer_bus.emit,
            fit,
            score_saved_model,
            rules=Rules(model_name=MODEL_NAME, params=PARAMS),
            git_sha=git_sha(),
            packages=package_versions(),
        ),
        max_run_s=600,
    )
    announcements = Announcements(settings, routes)
    await announcements.start()
    await validation_bus.broker.start()
    await trainer_bus.broker.start()
    running = Stack(objects, s3, mongo_db, validation_bus, trainer_bus, announcements)
    try:
        yield running
    finally:
        await trainer_bus.broker.stop()
        await validation_bus.broker.stop()
        await announcements.stop()
        await asyncio.to_thread(running.remove_everything_staged)


async def test_a_validated_version_is_trained_stored_recorded_and_then_reused(
    stack: Stack, tmp_path: Path
) -> None:
    files = screws(tmp_path / "screws", unique("run"))
    dataset_id, labeled = await stack.stage(files)
    await stack.validation_bus.publish(labeled)

    [trained] = await stack.announcements.trained(1, within=120)
    [validated] = stack.announcements.validated()
    assert trained.causation_id == validated.event_id
    assert trained.correlation_id == labeled.correlation_id
    payload = trained.payload
    run = payload.run_id
    stack.prefixes.append((Bucket.MODELS, f"{run_prefix(run)}/"))
    assert (payload.model_name, payload.dataset_id, payload.dataset_version) == (
        MODEL_NAME,
        dataset_id,
        1,
    )
    assert payload.dataset_digest == validated.payload.dataset_digest
    assert payload.artifact_key == saved_model_prefix(run, 1)
    assert payload.reused is False
    assert payload.metrics["epochs_run"] == 2.0
    assert 0.0 <= payload.metrics["val_accuracy"] <= 1.0
    # The threshold was chosen on the exported model's validation scores, for recall >= 0.95.
    assert 0.0 <= payload.threshold <= 1.0
    assert payload.model_kind == "supervised"
    assert payload.metrics["val_recall_at_threshold"] >= 0.95

    # The SavedModel in MinIO takes the decoded frames, finds each screw and scores it.
    assert payload.frame_size == 128
    local = tmp_path / "saved_model"
    await stack.objects.get_directory(Bucket.MODELS, payload.artifact_key, local)
    serve = tf.saved_model.load(str(local)).signatures[SERVING_SIGNATURE]
    batch = np.stack([fit_frame(decode(f.data).image, payload.frame_size) for f in files[:4]])
    out = serve(**{FRAMES_INPUT: tf.constant(batch)})
    probabilities = out[PROBABILITY_OUTPUT].numpy()
    assert probabilities.shape == (4, 1)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert out[PART_FOUND_OUTPUT].numpy().ravel().tolist() == [1.0] * 4
    history = json.loads(
        await stack.objects.get_verified(Bucket.MODELS, f"{run_prefix(run, 1)}/history.json")
    )
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    record_json = json.loads(
        await stack.objects.get_verified(Bucket.MODELS, f"{run_prefix(run, 1)}/run.json")
    )
    assert record_json["status"] == "finished"

    record = await stack.db[RUNS].find_one({"_id": run})
    assert record is not None
    assert (record["status"], record["attempts"]) == ("finished", 1)
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert set(record["epochs"][0]["metrics"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert record["params"] == PARAMS.model_dump(mode="json")
    assert record["seed"] == PARAMS.seed
    assert record["git_sha"]
    assert set(record["packages"]) == {"tensorflow", "keras", "numpy", "screwops-trainer"}
    assert record["dataset_digest"] == payload.dataset_digest
    assert record["threshold"] == payload.threshold
    counts = validated.payload.split_counts
    assert record["split_counts"] == {"train": counts.train, "validation": counts.validation}

    # The same data announced again, and a request for the newest version: no second training.
    again = DatasetValidated.origin(validated.payload, producer="validation")
    await stack.trainer_bus.publish(again)
    request = TrainingRequested.origin(
        TrainingRequestedPayload(
            model_name=MODEL_NAME,
            dataset_id=dataset_id,
            reason="integration test",
            requested_by="pytest",
        ),
        producer="pytest",
    )
    await stack.trainer_bus.publish(request)

    _, *answers = await stack.announcements.trained(3, within=60)
    assert {a.causation_id for a in answers} == {again.event_id, request.event_id}
    for answer in answers:
        assert answer.payload.reused is True
        assert answer.payload.run_id == run
        assert answer.payload.metrics == payload.metrics
    unchanged = await stack.db[RUNS].find_one({"_id": run})
    assert unchanged is not None
    assert (unchanged["attempts"], unchanged["started_at"]) == (1, record["started_at"])

    # What the runs CLI reads: the listing and one run.
    runs = MongoRuns(stack.db)
    [listed] = await runs.list_runs(dataset_id=dataset_id, status="finished")
    assert listed.run_id == run
    assert [e.epoch for e in listed.epochs] == [1, 2]
    assert await runs.list_runs(dataset_id=dataset_id, status="running") == []
    shown = await runs.run(run)
    assert shown is not None
    assert shown.finished_at is not None
    assert shown.finished_at.tzinfo is not None
