"""Labeling on the real stack: versions from Kafka, MinIO and FerretDB, annotators and reviewers
over a real gRPC channel, and ``dataset.labeled`` back on Kafka.

The service's pieces run in-process, wired as ``__main__`` wires them, except that its bus uses
this test's own topics (:class:`RoutedBus`) and its own database, and every dataset id is unique.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops.v1 import ingestion_pb2, labeling_pb2, labeling_pb2_grpc
from screwops_contracts import (
    DatasetIngested,
    DatasetIngestedPayload,
    DatasetLabeled,
    InspectionCompleted,
    InspectionCompletedPayload,
    InspectionReviewed,
    Topic,
)
from screwops_contracts.datasets import (
    Bucket,
    ImageLabel,
    Label,
    LabelSet,
    Manifest,
    ManifestImage,
)
from screwops_labeling import grpc_api, handlers
from screwops_labeling.config import ReviewPolicy, Rules
from screwops_labeling.service import LabelingService
from screwops_labeling.store import MongoLabelingStore, VersionImage, VersionRecord
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings
from screwops_storage import ObjectStore, database

from tests.integration.routing import RoutedBus, routed_topics, service_bus
from tests.support import eventually, minio_client, png, remove_objects, unique
from tests.unit.labeling.fakes import training_requested


@dataclass
class Labeling:
    """The running service, a client for its API, and what it published."""

    bus: RoutedBus
    objects: ObjectStore
    stub: labeling_pb2_grpc.LabelingServiceAsyncStub
    store: MongoLabelingStore
    labeled: list[DatasetLabeled] = field(default_factory=list)
    reviewed: list[InspectionReviewed] = field(default_factory=list)

    async def ingest(
        self, dataset_id: str, images: list[tuple[str, Label | None]]
    ) -> tuple[DatasetIngested, list[ManifestImage]]:
        """Store images and their manifest in MinIO, and publish the version's event."""
        entries = []
        for filename, label in images:
            stored = await self.objects.put_content(
                Bucket.IMAGES, f"{dataset_id}/{filename}/{uuid.uuid4()}".encode(), prefix="raw"
            )
            entries.append(
                ManifestImage(
                    sha256=stored.sha256,
                    key=stored.key,
                    filename=filename,
                    width=64,
                    height=64,
                    format="PNG",
                    label=label,
                )
            )
        entries.sort(key=lambda image: image.sha256)
        manifest = Manifest(
            dataset_id=dataset_id,
            version=1,
            created_at=datetime.now(UTC),
            images=entries,
        )
        key = f"{dataset_id}/v1/manifest.json"
        await self.objects.put_named(Bucket.DATASETS, key, manifest.model_dump_json().encode())
        event = DatasetIngested.origin(
            DatasetIngestedPayload(
                dataset_id=dataset_id,
                version=1,
                manifest_key=key,
                image_count=len(entries),
                labeled_by_layout=sum(1 for image in entries if image.label is not None),
                refused_count=0,
                duplicate_count=0,
                source="upload",
            ),
            producer="it",
        )
        await self.bus.publish(event)
        return event, entries

    async def announced(self, dataset_id: str) -> DatasetLabeled:
        """Wait for the dataset's ``dataset.labeled`` to come back from Kafka."""

        async def found() -> DatasetLabeled | None:
            return next((e for e in self.labeled if e.payload.dataset_id == dataset_id), None)

        return await eventually(found, within=30, what=f"dataset.labeled for {dataset_id}")

    async def label_set(self, event: DatasetLabeled) -> LabelSet:
        body = await self.objects.get_verified(Bucket.DATASETS, event.payload.labels_key)
        return LabelSet.model_validate_json(body)

    async def next_unlabeled(self, dataset_id: str, annotator: str) -> labeling_pb2.LabelTask:
        """NextUnlabeled once the version is recorded (the event travels through Kafka first)."""

        async def task() -> labeling_pb2.LabelTask | None:
            try:
                return await self.stub.NextUnlabeled(
                    labeling_pb2.NextUnlabeledRequest(dataset_id=dataset_id, annotator=annotator)
                )
            except grpc.aio.AioRpcError as error:
                if "unknown dataset" in (error.details() or ""):
                    return None
                raise

        return await eventually(task, within=30, what=f"{dataset_id} to be recorded")


def inspected(line: str, probability: float, image_key: str) -> InspectionCompleted:
    """The gateway's ``inspection.completed`` of version 1 at threshold 0.5, with its image kept."""
    return InspectionCompleted.origin(
        InspectionCompletedPayload(
            request_id=unique("req"),
            line_id=line,
            camera_id="cam-1",
            verdict="DEFECT" if probability >= 0.5 else "GOOD",
            defect_probability=probability,
            threshold=0.5,
            model_name="screw-classifier",
            model_version=1,
            trace_id=uuid.uuid4().hex,
            image_key=image_key,
            latency_ms=5.0,
        ),
        producer="it",
    )


@pytest.fixture
async def routes(settings: StackSettings) -> AsyncIterator[dict[str, str]]:
    """A fresh topic (and dead-letter twin) for each topic labeling consumes or produces."""
    topics = (
        Topic.DATASET_INGESTED,
        Topic.INSPECTION_COMPLETED,
        Topic.DATASET_LABELED,
        Topic.INSPECTION_REVIEWED,
        Topic.TRAINING_REQUESTED,
    )
    async for routes in routed_topics(settings, topics, "it-labeling"):
        yield routes


@pytest.fixture
async def labeling(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any], routes: dict[str, str]
) -> AsyncIterator[Labeling]:
    # mongo_db names a fresh database (dropped afterwards); open it the way services do.
    db = database(settings.mongo, mongo_db.name, appname="it-labeling")
    objects = ObjectStore.from_settings(settings.minio)
    await objects.ensure_buckets(Bucket.IMAGES, Bucket.DATASETS, Bucket.INSPECTIONS, Bucket.DROP)
    bus = service_bus(settings, "labeling", db, routes)
    store = MongoLabelingStore(db)
    await store.ensure_indexes()
    service = LabelingService(
        store,
        objects,
        bus.publish,
        rules=Rules(
            reservation=timedelta(minutes=10),
            review=ReviewPolicy(band=0.15, sample_rate=0.0, dataset_id=unique("it-review")),
        ),
    )
    handlers.register(bus, service)
    server = grpc_api.server(
        service,
        host="127.0.0.1",
        port=0,
    )
    labeled: list[DatasetLabeled] = []
    reviewed: list[InspectionReviewed] = []

    @bus.broker.subscriber(routes[Topic.DATASET_LABELED], group_id=unique("it-reader"))
    async def on_dataset_labeled(event: DatasetLabeled) -> None:
        labeled.append(event)

    @bus.broker.subscriber(routes[Topic.INSPECTION_REVIEWED], group_id=unique("it-reader"))
    async def on_inspection_reviewed(event: InspectionReviewed) -> None:
        reviewed.append(event)

    await bus.broker.start()
    await server.start()
    channel = open_aio_channel(f"127.0.0.1:{server.port}")
    try:
        yield Labeling(
            bus=bus,
            objects=objects,
            stub=labeling_pb2_grpc.LabelingServiceStub(channel),
            labeled=labeled,
            reviewed=reviewed,
            store=store,
        )
    finally:
        await channel.close()
        await server.stop(grace=1)
        await bus.broker.stop()
        db.client.close()


async def test_a_version_labeled_by_its_layout_is_announced_on_kafka(labeling: Labeling) -> None:
    dataset_id = unique("it-layout")
    event, images = await labeling.ingest(
        dataset_id,
        [("good/0.png", Label.GOOD), ("good/1.png", Label.GOOD), ("bad/0.png", Label.BAD)],
    )

    labeled = await labeling.announced(dataset_id)

    assert labeled.causation_id == event.event_id
    assert labeled.correlation_id == event.correlation_id
    assert labeled.payload.label_counts == {"good": 2, "bad": 1}
    assert labeled.payload.labels_key == f"{dataset_id}/v1/labels.json"
    labels = await labeling.label_set(labeled)
    assert [label.sha256 for label in labels.labels] == [image.sha256 for image in images]
    assert {label.source for label in labels.labels} == {"import"}


async def test_annotators_label_over_grpc_until_the_version_is_announced(
    labeling: Labeling,
) -> None:
    dataset_id = unique("it-manual")
    _, images = await labeling.ingest(
        dataset_id, [("a.png", None), ("b.png", None), ("c.png", Label.GOOD)]
    )
    by_sha = {image.sha256: image for image in images}

    ana = await labeling.next_unlabeled(dataset_id, "ana")
    bo = await labeling.next_unlabeled(dataset_id, "bo")
    ana_again = await labeling.next_unlabeled(dataset_id, "ana")

    assert ana.image_sha256 != bo.image_sha256
    assert ana_again.image_sha256 == ana.image_sha256
    assert ana.remaining_count == 2
    assert ana.object_key == by_sha[ana.image_sha256].key
    assert ana.filename == by_sha[ana.image_sha256].filename
    assert ana.image.startswith(f"{dataset_id}/{ana.filename}/".encode())
    with pytest.raises(grpc.aio.AioRpcError) as none_left:
        await labeling.stub.NextUnlabeled(
            labeling_pb2.NextUnlabeledRequest(dataset_id=dataset_id, annotator="cy")
        )
    assert none_left.value.code() == grpc.StatusCode.NOT_FOUND

    for task, label in ((ana, ingestion_pb2.LABEL_BAD), (bo, ingestion_pb2.LABEL_GOOD)):
        response = await labeling.stub.SubmitLabel(
            labeling_pb2.SubmitLabelRequest(
                image_sha256=task.image_sha256,
                dataset_id=dataset_id,
                label=label,
                annotator="ana" if task is ana else "bo",
            )
        )
    assert response.remaining_count == 0

    labeled = await labeling.announced(dataset_id)
    assert labeled.payload.label_counts == {"good": 2, "bad": 1}
    manual = {
        label.sha256: label.annotator
        for label in (await labeling.label_set(labeled)).labels
        if label.source == "manual"
    }
    assert manual == {ana.image_sha256: "ana", bo.image_sha256: "bo"}


async def test_a_label_studio_export_round_trip(labeling: Labeling) -> None:
    dataset_id = unique("it-ls")
    _, images = await labeling.ingest(
        dataset_id, [("train/0.png", None), ("train/1.png", None), ("train/2.png", None)]
    )
    await labeling.next_unlabeled(dataset_id, "wait-for-recording")
    choices = {"train/0.png": "good", "train/1.png": "bad", "train/2.png": "good"}
    export = [
        {
            "id": n,
            "data": {"image": f"/data/upload/7/{uuid.uuid4().hex[:8]}-{filename[6:]}"},
            "annotations": [
                {
                    "completed_by": {"email": "ls@plant-7"},
                    "was_cancelled": False,
                    "result": [
                        {
                            "from_name": "choice",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [choice]},
                        }
                    ],
                }
            ],
        }
        for n, (filename, choice) in enumerate(choices.items(), start=1)
    ]
    export.append({"id": 9, "data": {"image": "/data/upload/7/0000abcd-9.png"}, "annotations": []})

    report = await labeling.stub.ImportLabels(
        labeling_pb2.ImportLabelsRequest(
            dataset_id=dataset_id,
            format=labeling_pb2.LABEL_FORMAT_LABEL_STUDIO_JSON,
            content=json.dumps(export).encode(),
            annotator="importer",
        )
    )

    assert (report.applied_count, report.unchanged_count, report.remaining_count) == (3, 0, 0)
    assert (report.unmatched_count, report.invalid_count) == (0, 1)
    assert [(p.row, p.reason) for p in report.problems] == [(4, "the task has no annotation")]
    labeled = await labeling.announced(dataset_id)
    assert labeled.payload.label_counts == {"good": 2, "bad": 1}
    labels = {label.sha256: label for label in (await labeling.label_set(labeled)).labels}
    assert {
        image.filename: (labels[image.sha256].label.value, labels[image.sha256].annotator)
        for image in images
    } == {filename: (choice, "ls@plant-7") for filename, choice in choices.items()}


async def test_an_operator_closes_a_version_with_the_unlabeled_excluded(
    labeling: Labeling,
) -> None:
    dataset_id = unique("it-close")
    _, images = await labeling.ingest(
        dataset_id, [("a.png", Label.GOOD), ("b.png", None), ("c.png", None)]
    )
    await labeling.next_unlabeled(dataset_id, "wait-for-recording")

    closed = await labeling.stub.CloseVersion(
        labeling_pb2.CloseVersionRequest(dataset_id=dataset_id, operator="op", reason="it")
    )

    assert (closed.closed_version, closed.open_version) == (1, 2)
    assert (closed.labeled_count, closed.excluded_count) == (1, 2)
    labeled = await labeling.announced(dataset_id)
    assert (labeled.payload.excluded_count, labeled.payload.closed_by) == (2, "op")
    assert (await labeling.label_set(labeled)).excluded == sorted(
        image.sha256 for image in images if image.label is None
    )


async def test_uncertain_inspections_are_queued_paged_and_reviewed(labeling: Labeling) -> None:
    line = unique("line")
    events = []
    for probability in (0.45, 0.55, 0.02, 0.6):
        event = inspected(line, probability, f"inspections/{uuid.uuid4().hex}")
        events.append(event)
        await labeling.bus.publish(event)
    # Oldest first, as stored: MongoDB keeps milliseconds, and ties go by inspection id.
    uncertain = [
        str(e.event_id)
        for e in sorted(
            (e for e in events if e.payload.defect_probability != 0.02),
            key=lambda e: (
                e.occurred_at.replace(microsecond=e.occurred_at.microsecond // 1000 * 1000),
                str(e.event_id),
            ),
        )
    ]

    async def queue() -> labeling_pb2.ListReviewQueueResponse | None:
        page = await labeling.stub.ListReviewQueue(
            labeling_pb2.ListReviewQueueRequest(line_id=line, page_size=2)
        )
        return page if page.total_size == len(uncertain) else None

    first = await eventually(queue, within=30, what="three inspections in the review queue")
    second = await labeling.stub.ListReviewQueue(
        labeling_pb2.ListReviewQueueRequest(
            line_id=line, page_size=2, page_token=first.next_page_token
        )
    )
    assert [i.inspection_id for i in [*first.review_items, *second.review_items]] == uncertain
    assert second.next_page_token == ""

    reviewed = str(events[1].event_id)  # DEFECT at 0.55
    result = await labeling.stub.SubmitReview(
        labeling_pb2.SubmitReviewRequest(
            inspection_id=reviewed, label=ingestion_pb2.LABEL_BAD, reviewer="rev"
        )
    )
    assert (result.verdict_correct, result.remaining_count) == (True, 2)
    left = await labeling.stub.ListReviewQueue(labeling_pb2.ListReviewQueueRequest(line_id=line))
    assert [i.inspection_id for i in left.review_items] == [i for i in uncertain if i != reviewed]

    async def ground_truth() -> InspectionReviewed | None:
        return labeling.reviewed[0] if labeling.reviewed else None

    truth = await eventually(ground_truth, within=30, what="inspection.reviewed for the monitor")
    assert (truth.payload.inspection_id, truth.payload.label) == (reviewed, "bad")
    assert truth.payload.verdict_correct


async def test_a_training_request_drops_the_reviewed_inspections_for_ingestion(
    settings: StackSettings, labeling: Labeling
) -> None:
    line, dataset = unique("line"), unique("it-retrain")
    queued: list[tuple[str, str]] = []
    for seed in range(3):
        stored = await labeling.objects.put_content(
            Bucket.INSPECTIONS, png(24, seed=seed), prefix="raw"
        )
        event = inspected(line, 0.45, stored.key)
        await labeling.bus.publish(event)
        queued.append((str(event.event_id), stored.sha256))

    async def all_queued() -> bool | None:
        page = await labeling.stub.ListReviewQueue(
            labeling_pb2.ListReviewQueueRequest(line_id=line)
        )
        return True if page.total_size == len(queued) else None

    await eventually(all_queued, within=30, what="the inspections in the review queue")
    (bad_id, bad), (good_id, good), _pending = queued
    for inspection_id, label in (
        (bad_id, ingestion_pb2.LABEL_BAD),
        (good_id, ingestion_pb2.LABEL_GOOD),
    ):
        await labeling.stub.SubmitReview(
            labeling_pb2.SubmitReviewRequest(
                inspection_id=inspection_id, label=label, reviewer="rev"
            )
        )

    await labeling.bus.publish(training_requested(dataset, degraded_version=1))

    s3 = minio_client(settings.minio)

    async def dropped() -> list[str] | None:
        keys = await labeling.objects.list_keys(Bucket.DROP, dataset)
        return keys if f"{dataset}/_READY" in keys else None

    try:
        keys = await eventually(dropped, within=30, what=f"the drop of {dataset}")
        assert sorted(keys) == sorted(
            [f"{dataset}/bad/{bad}", f"{dataset}/good/{good}", f"{dataset}/_READY"]
        )
        handed = await labeling.store.reviewed_outside(
            dataset, model_name="screw-classifier", model_version=1
        )
        assert handed == []
        elsewhere = await labeling.store.reviewed_outside(
            "another", model_name="screw-classifier", model_version=1
        )
        assert (
            await labeling.store.reviewed_outside(
                "another", model_name="screw-classifier", model_version=2
            )
            == []
        )
        assert {i.inspection_id for i in elsewhere} == {
            bad_id,
            good_id,
        }
    finally:
        await asyncio.to_thread(remove_objects, s3, Bucket.DROP, f"{dataset}/")


async def test_the_store_repairs_a_labeled_flag_a_crash_left_behind(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]
) -> None:
    db = database(settings.mongo, mongo_db.name, appname="it-labeling")
    store = MongoLabelingStore(db)
    await store.ensure_indexes()
    shas = sorted(f"{n}" * 64 for n in range(3))
    event = DatasetIngested.origin(
        DatasetIngestedPayload(
            dataset_id="d",
            version=1,
            manifest_key="d/v1/manifest.json",
            image_count=3,
            labeled_by_layout=0,
            refused_count=0,
            duplicate_count=0,
            source="upload",
        ),
        producer="it",
    )
    record = VersionRecord("d", 1, "d/v1/manifest.json", 3, event, opened_at=datetime.now(UTC))
    images = [VersionImage("d", 1, sha, f"raw/{sha}", f"{sha[:1]}.png") for sha in shas]
    try:
        for _ in range(2):  # recording twice changes nothing
            await store.record_version(record, images)
        # The crash: the label of shas[0] was written, its flag was not.
        label = ImageLabel(
            sha256=shas[0], label=Label.GOOD, source="manual", labeled_at=datetime.now(UTC)
        )
        await db.labels.insert_one({"_id": f"d/{shas[0]}", "dataset_id": "d", **label.model_dump()})
        assert await store.unlabeled_count("d", 1) == 3

        now = datetime.now(UTC)
        until = now + timedelta(minutes=1)
        held = [await store.reserve_next("d", 1, who, now=now, until=until) for who in ("a", "b")]
        assert [image.sha256 if image else None for image in held] == shas[1:]
        assert await store.unlabeled_count("d", 1) == 2
        assert await store.unlabeled("d", 1) == shas[1:]
        assert await store.reserve_next("d", 1, "c", now=now, until=until) is None
        later = now + timedelta(minutes=2)
        expired = await store.reserve_next("d", 1, "c", now=later, until=later)
        assert expired is not None
        assert expired.sha256 == shas[1]
        assert await db.version_images.count_documents({}) == 3
        assert [r.version for r in await store.versions("d")] == [1]
    finally:
        db.client.close()
