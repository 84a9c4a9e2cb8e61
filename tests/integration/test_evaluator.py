"""The evaluator on the real stack: a version's test split in MinIO, ``model.trained`` on the real
Kafka, candidates served by the real Triton under a staging name of this test's own, production
scored in Triton for the comparison, and the verdicts read back from Kafka, MinIO and FerretDB.

The service's pieces run in-process, wired as ``__main__`` wires them, except that its bus uses
this test's own topics (:class:`RoutedBus`) and database, and the model and staging names are
unique, so nothing here meets another test's events, documents or Triton models. The models take
the frames contract's uint8 frames (of the test pictures' own size, so the evaluator's fit_frame
passes them through): tiny SavedModels (``tests.frames_model``) that look only at a frame's
brightest pixel (see ``tests.unit.evaluator.builders``), so their accuracy on the test split is
known exactly, and one of the trainer's own.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from motor.motor_asyncio import AsyncIOMotorDatabase
from PIL import Image
from screwops_contracts import (
    AssertionResult,
    Event,
    ModelApproved,
    ModelRejected,
    Topic,
)
from screwops_contracts.datasets import Bucket
from screwops_contracts.events import ModelTrained, ModelTrainedPayload
from screwops_contracts.models import ModelKind, evaluation_report_key, saved_model_prefix
from screwops_errors import AlreadyExistsError
from screwops_evaluator import handlers
from screwops_evaluator.config import Rules, Staging
from screwops_evaluator.report import EvaluationReport
from screwops_evaluator.service import EvaluatorService, evaluation_id_of
from screwops_evaluator.staging import StagingArea, staging_version
from screwops_evaluator.store import (
    EVALUATIONS,
    Champion,
    EvaluationRecord,
    MongoEvaluatorStore,
)
from screwops_imaging import fit_frame
from screwops_serving import TritonModels, export_version, versions_present
from screwops_serving.client import MODEL_CONTROL_GRPC_HEADER
from screwops_settings import StackSettings, triton_model_control_key, triton_model_repository
from screwops_storage import ClaimTimes, Held, ObjectStore, content_key, database, sha256_hex

from tests.frames_model import save_frames_model
from tests.integration.routing import RoutedBus, routed_topics, service_bus
from tests.support import eventually, minio_client, model_deployed, remove_objects, unique
from tests.unit.evaluator.builders import (
    BAD_LEVEL,
    GOOD_LEVEL,
    LAX,
    SHARP,
    STEEPNESS,
    disc_pixels,
    evaluation_set,
    stage_split_version,
)

VERDICTS = (Topic.MODEL_APPROVED, Topic.MODEL_REJECTED)


# The side of the test pictures (disc_pixels' default), so fit_frame passes them through.
FRAME_SIZE = 64


def shuffled_labels_model(directory: Path) -> None:
    """Export the trainer's own network trained, the trainer's way, on screws like the test
    split's with shuffled labels: within each brightness half are called good and half
    defective, so the labels say nothing about the picture and there is nothing to learn."""
    from screwops_trainer.model import TrainingParams, configure_tensorflow, fit

    configure_tensorflow(intra_op_threads=2, inter_op_threads=1)
    rng = np.random.default_rng(3)
    pictures, labels = [], []
    for offset, level in ((1000, GOOD_LEVEL), (2000, BAD_LEVEL)):
        pictures += [disc_pixels(offset + i, level) for i in range(20)]
        labels += list(rng.permutation([0.0, 1.0] * 10))
    order = rng.permutation(len(labels))
    frames = np.stack([fit_frame(Image.fromarray(pictures[i]), FRAME_SIZE) for i in order])
    targets = np.array([labels[i] for i in order], dtype=np.float32)
    params = TrainingParams(epochs=4, patience=4, filters=(4, 8), batch_size=8)
    fit(params, (frames[:32], targets[:32]), (frames[32:], targets[32:])).save(directory)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The candidates' SavedModels: sharp (accuracy 1.0), lax (0.96), blind (a probability of 0
    for every frame: it passes every screw, 0.6), and the trainer's network trained on shuffled
    labels."""
    root = tmp_path_factory.mktemp("evaluator_models")
    shuffled_labels_model(root / "shuffled")  # first: it bounds TensorFlow's threads
    save_frames_model(root / "blind", FRAME_SIZE, scale=0.0)
    for name, cutoff in (("sharp", SHARP), ("lax", LAX)):
        save_frames_model(root / name, FRAME_SIZE, cutoff=cutoff, steepness=STEEPNESS)
    return {name: root / name for name in ("blind", "sharp", "lax", "shuffled")}


@dataclass
class Evaluator:
    """The running service, its Triton names, and the verdicts it published."""

    settings: StackSettings
    model: str
    staging: str
    dataset_id: str
    bus: RoutedBus
    objects: ObjectStore
    triton: TritonModels
    store: MongoEvaluatorStore
    db: AsyncIOMotorDatabase[Any]
    repository: Path
    saved_models: dict[str, Path]
    verdicts: list[Event[Any]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    async def train(self, name: str) -> ModelTrained:
        """Store the SavedModel ``name`` as a new run's and publish the trainer's event."""
        run_id = unique(f"{self.model}-{name}")
        self.runs.append(run_id)
        prefix = saved_model_prefix(run_id)
        await self.objects.put_directory(Bucket.MODELS, self.saved_models[name], prefix=prefix)
        trained = ModelTrained.origin(
            ModelTrainedPayload(
                model_name=self.model,
                run_id=run_id,
                dataset_id=self.dataset_id,
                dataset_version=1,
                dataset_digest="it-digest",
                artifact_key=prefix,
                metrics={"val_accuracy": 0.99},
                frame_size=FRAME_SIZE,
            ),
            producer="trainer",
        )
        await self.bus.publish(trained)
        return trained

    async def verdict(self, trained: ModelTrained) -> Event[Any]:
        async def found() -> Event[Any] | None:
            return next((e for e in self.verdicts if e.causation_id == trained.event_id), None)

        return await eventually(found, within=120, what=f"a verdict on {trained.payload.run_id}")

    async def report(self, event: Event[Any]) -> EvaluationReport:
        body = await self.objects.get_verified(Bucket.MODELS, event.payload.report_key)
        return EvaluationReport.model_validate_json(body)

    async def staged_versions_seen(self) -> dict[str, tuple[str, str]]:
        """Triton's index entries for the staging model: version -> (state, reason)."""
        client = grpcclient.InferenceServerClient(self.settings.triton.grpc_url)
        try:
            # The index is model control, which Triton opens only to the key's holders.
            index: dict[str, Any] = await client.get_model_repository_index(
                headers={MODEL_CONTROL_GRPC_HEADER: triton_model_control_key(self.settings)},
                as_json=True,
            )
        finally:
            await client.close()
        return {
            entry.get("version", ""): (entry.get("state", ""), entry.get("reason", ""))
            for entry in index.get("models", [])
            if entry.get("name") == self.staging
        }

    async def left_nothing_in_staging(self) -> None:
        assert versions_present(self.repository, name=self.staging) == []
        assert not await self.triton.ready(self.staging)


def checks_of(event: Event[Any]) -> dict[str, AssertionResult]:
    return {c.name: c for c in event.payload.checks}


@pytest.fixture
async def routes(settings: StackSettings) -> AsyncIterator[dict[str, str]]:
    """A fresh topic (and dead-letter twin) for each topic the evaluator consumes or produces."""
    used = (
        Topic.MODEL_TRAINED,
        Topic.MODEL_DEPLOYED,
        Topic.MODEL_ROLLED_BACK,
        *VERDICTS,
    )
    async for routes in routed_topics(settings, used, "it-evaluator"):
        yield routes


@pytest.fixture
async def evaluator(
    settings: StackSettings,
    mongo_db: AsyncIOMotorDatabase[Any],
    routes: dict[str, str],
    saved_models: dict[str, Path],
) -> AsyncIterator[Evaluator]:
    model = unique("it-eval-model")
    staging = unique("it-eval-staging")
    dataset_id = unique("it-eval-screws")
    db = database(settings.mongo, mongo_db.name, appname="it-evaluator")
    objects = ObjectStore.from_settings(settings.minio)
    await objects.ensure_buckets(Bucket.IMAGES, Bucket.DATASETS, Bucket.MODELS)
    test, other = evaluation_set(note=dataset_id)
    await stage_split_version(objects, dataset_id, test, other)
    # The service's own wiring (see __main__), on this test's own topics, names and database.
    bus = service_bus(settings, "evaluator", db, routes)
    store = MongoEvaluatorStore(db)
    await store.ensure_indexes()
    repository = triton_model_repository(settings.home)
    triton = TritonModels(
        settings.triton.grpc_url, model_control_key=triton_model_control_key(settings)
    )
    rules = Rules(Staging(repository=repository, model=staging))
    service = EvaluatorService(
        store, objects, StagingArea(triton, objects, rules.staging), bus.emit, rules=rules
    )
    handlers.register(bus, service)
    verdicts: list[Event[Any]] = []

    @bus.broker.subscriber(routes[Topic.MODEL_APPROVED], group_id=unique("it-reader"))
    async def on_model_approved(event: ModelApproved) -> None:
        verdicts.append(event)

    @bus.broker.subscriber(routes[Topic.MODEL_REJECTED], group_id=unique("it-reader"))
    async def on_model_rejected(event: ModelRejected) -> None:
        verdicts.append(event)

    await bus.broker.start()
    running = Evaluator(
        settings,
        model,
        staging,
        dataset_id,
        bus,
        objects,
        triton,
        store,
        db,
        repository,
        saved_models,
        verdicts,
    )
    try:
        yield running
    finally:
        await bus.broker.stop()
        for name in (model, staging):
            if await triton.ready(name):
                await triton.unload(name)
            shutil.rmtree(repository / name, ignore_errors=True)
        await triton.close()
        images = [content_key("raw", sha256_hex(f.data)) for f in (*test, *other)]
        s3 = minio_client(settings.minio)
        await asyncio.to_thread(
            remove_objects,
            s3,
            Bucket.MODELS,
            *[f"{saved_model_prefix(run)}/" for run in running.runs],
            *[f"evaluations/{evaluation_id_of(model, run)}.json" for run in running.runs],
        )
        await asyncio.to_thread(remove_objects, s3, Bucket.DATASETS, f"{dataset_id}/")
        await asyncio.to_thread(remove_objects, s3, Bucket.IMAGES, *images)
        db.client.close()


async def test_a_good_first_model_is_approved_and_a_blind_one_rejected(
    evaluator: Evaluator,
) -> None:
    good = await evaluator.train("lax")
    blind = await evaluator.train("blind")

    approved = await evaluator.verdict(good)
    assert isinstance(approved, ModelApproved), approved
    assert approved.correlation_id == good.correlation_id
    payload = approved.payload
    evaluation_id = evaluation_id_of(evaluator.model, good.payload.run_id)
    # The event names the report its (first and only) attempt wrote.
    assert (payload.evaluation_id, payload.report_key) == (
        evaluation_id,
        evaluation_report_key(evaluation_id, 1),
    )
    assert payload.champion_version is None
    assert payload.metrics["accuracy"] == pytest.approx(0.96)
    assert payload.metrics["recall"] == pytest.approx(0.9)
    assert payload.metrics["test_images"] == 50
    assert payload.metrics["recall_scratch_neck"] == 0.0
    checks = checks_of(approved)
    assert all(c.passed for c in checks.values()), checks
    assert checks["champion_comparison"].message == "no production model yet"
    infra = checks["infra_validation"]
    assert infra.observed is not None
    assert 0.0 <= infra.observed <= 1.0
    report = await evaluator.report(approved)
    print(f"staging: loaded and checked in {report.infra.load_seconds:.1f} s")
    assert report.infra.served
    assert report.metrics is not None
    assert report.metrics.confusion.false_negatives == 2
    record = await evaluator.db[EVALUATIONS].find_one({"_id": evaluation_id})
    assert record is not None
    assert (record["passed"], record["run_id"]) == (True, good.payload.run_id)

    rejected = await evaluator.verdict(blind)
    assert isinstance(rejected, ModelRejected), rejected
    failed = {name: c for name, c in checks_of(rejected).items() if not c.passed}
    assert "accuracy" in failed
    assert failed["accuracy"].observed == pytest.approx(0.6)
    assert "30 of 50 test images right" in failed["accuracy"].message

    await evaluator.left_nothing_in_staging()
    versions = {
        str(staging_version(evaluation_id_of(evaluator.model, trained.payload.run_id)))
        for trained in (good, blind)
    }

    async def unloaded() -> dict[str, tuple[str, str]] | None:
        seen = await evaluator.staged_versions_seen()
        done = all(seen.get(v) == ("UNAVAILABLE", "unloaded") for v in versions)
        return seen if done else None

    # Triton's index remembers each version it loaded: both were served, then unloaded.
    await eventually(unloaded, within=30, what=f"staging versions {versions} unloaded")


async def test_a_candidate_worse_than_production_is_rejected(
    evaluator: Evaluator,
) -> None:
    export_version(
        evaluator.saved_models["sharp"],
        evaluator.repository,
        name=evaluator.model,
        version=1,
        frame_size=FRAME_SIZE,
    )
    await evaluator.triton.load(evaluator.model)
    deployed = model_deployed(evaluator.model, 1, run_id="it-production-run", frame_size=FRAME_SIZE)
    await evaluator.bus.publish(deployed)

    async def production_known() -> int | None:
        champion = await evaluator.store.get_champion(evaluator.model)
        return champion.version if champion else None

    assert await eventually(production_known, within=30, what="the production version") == 1

    worse = await evaluator.train("lax")

    rejected = await evaluator.verdict(worse)
    assert isinstance(rejected, ModelRejected), rejected
    failed = [name for name, c in checks_of(rejected).items() if not c.passed]
    assert failed == ["champion_comparison", "champion_recall_comparison"]
    comparison = checks_of(rejected)["champion_comparison"]
    assert comparison.observed == pytest.approx(-0.04)
    assert comparison.message == (
        "accuracy 0.9600 vs production version 1's 1.0000 at its threshold 0.5 "
        "(difference -0.0400, allowed drop 0.02)"
    )
    assert checks_of(rejected)["champion_recall_comparison"].observed == pytest.approx(-0.1)
    assert rejected.payload.metrics["champion_accuracy"] == 1.0
    report = await evaluator.report(rejected)
    assert report.champion is not None
    assert (report.champion.version, report.champion.run_id) == (1, "it-production-run")

    await evaluator.left_nothing_in_staging()
    assert await evaluator.triton.ready(evaluator.model, 1), "production is left serving"


async def test_the_mongo_store_keeps_the_newest_production_and_one_record_per_run(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]
) -> None:
    """The champion's compare-and-set on its time and the unique run, on FerretDB (or MongoDB)."""
    db = database(settings.mongo, mongo_db.name, appname="it-evaluator")
    store = MongoEvaluatorStore(db)
    try:
        await store.ensure_indexes()
        await store.ensure_indexes()
        start = datetime(2026, 1, 1, 12, tzinfo=UTC)

        def production(version: int, minutes: int) -> Champion:
            return Champion(
                "m",
                version,
                "m",
                f"run-{version}",
                start + timedelta(minutes=minutes),
                "e",
                threshold=version / 10,
            )

        assert await store.get_champion("m") is None
        assert await store.set_champion(production(1, 0))
        assert await store.set_champion(production(3, 2))
        assert not await store.set_champion(production(2, 1)), "an older move arrived late"
        assert not await store.set_champion(production(3, 2)), "the same move again"
        assert await store.get_champion("m") == production(3, 2)

        await store.record_served_run("m", 3, "run-3")
        await store.record_served_run("m", 3, "run-3")
        assert await store.served_run("m", 3) == "run-3"
        assert await store.served_run("m", 4) is None

        record = EvaluationRecord(
            evaluation_id="eval-1",
            model_name="m",
            run_id="run-9",
            dataset_id="d",
            dataset_version=2,
            artifact_key="runs/run-9/saved_model",
            passed=False,
            metrics={"accuracy": 0.5},
            checks=[AssertionResult(name="accuracy", passed=False, observed=0.5)],
            champion_version=None,
            report_key="evaluations/eval-1.json",
            cause_event_id="c",
            evaluated_at=start,
            threshold=0.27,
            model_kind=ModelKind.GOOD_ONLY,
        )
        live, abandoned = ClaimTimes(max_run_s=60), ClaimTimes(max_run_s=0)
        assert await store.claim_evaluation("eval-1", "m", "run-9", times=live) == 1
        assert await store.claim_evaluation("eval-1", "m", "run-9", times=live) == Held(1)
        taken = await store.claim_evaluation("eval-1", "m", "run-9", times=abandoned)
        assert taken == 2, "an abandoned claim is taken over with the next number"
        assert await store.get_evaluation("eval-1") is None, "a claim is not a verdict"
        assert not await store.renew_evaluation("eval-1", 1)
        assert not await store.complete_evaluation(record, 1), "the attempt taken over"
        assert await store.renew_evaluation("eval-1", 2)
        assert await store.complete_evaluation(record, 2)
        assert not await store.complete_evaluation(replace(record, passed=True), 2)
        assert await store.get_evaluation("eval-1") == record
        assert await store.claim_evaluation("eval-1", "m", "run-9", times=live) == record
        assert await db[EVALUATIONS].count_documents({"run_id": "run-9"}) == 1
        with pytest.raises(AlreadyExistsError):
            await store.claim_evaluation("eval-2", "m", "run-9", times=live)
    finally:
        db.client.close()


async def test_a_model_trained_on_shuffled_labels_is_rejected_and_left_unserved(
    evaluator: Evaluator,
) -> None:
    trained = await evaluator.train("shuffled")
    rejected = await evaluator.verdict(trained)
    assert isinstance(rejected, ModelRejected), rejected
    failed = {name for name, c in checks_of(rejected).items() if not c.passed}
    assert "accuracy" in failed
    assert checks_of(rejected)["infra_validation"].passed  # it loaded; it just knows nothing
    # Scored under the staging name only, and taken out of Triton again.
    await evaluator.left_nothing_in_staging()
