"""Validation on the real stack: images in MinIO, ``dataset.labeled`` on the real Kafka, the
service's own wiring in-process (its handlers on a real Bus, motor on the real database, the real
ObjectStore), and the verdict read back from Kafka, MinIO and the database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from minio import Minio
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_contracts import DatasetLabeled, DatasetRejected, DatasetValidated, Event, Topic
from screwops_contracts.datasets import Bucket, Label, Split, version_prefix
from screwops_settings import StackSettings
from screwops_storage import ObjectStore, content_key, sha256_hex
from screwops_validation import handlers
from screwops_validation.config import Rules
from screwops_validation.report import ValidationReport
from screwops_validation.service import ValidationService
from screwops_validation.store import REPORTS, MongoValidationStore

from tests.integration.routing import RoutedBus, RoutedReader, routed_topics, service_bus
from tests.support import eventually, minio_client, remove_objects, unique
from tests.unit.validation.builders import (
    File,
    bad,
    circle_pixels,
    encode,
    good,
    stage_version,
)

VERDICTS: dict[str, type[Event[Any]]] = {
    Topic.DATASET_VALIDATED: DatasetValidated,
    Topic.DATASET_REJECTED: DatasetRejected,
}


def clean_version(run: str) -> list[File]:
    """24 good and 24 bad images; ``run`` (in a PNG text chunk) makes the bytes, and so the
    content keys, this run's alone while the pictures, and so the verdict, stay the same."""
    return [good(i, note=run) for i in range(24)] + [bad(5000 + i, note=run) for i in range(24)]


def poisoned_version(run: str) -> list[File]:
    """A corrupt file, two copies of one picture, an unlabeled image and only 5 bad images."""
    twin = circle_pixels(9000, bright=True)
    return [
        *[good(i, note=run) for i in range(24)],
        *[bad(5000 + i, note=run) for i in range(5)],
        File(
            "good/corrupt.png",
            encode(circle_pixels(9001, bright=True), note=run)[:300],
            Label.GOOD,
        ),
        File("good/twin-a.png", encode(twin, note=run), Label.GOOD),
        File("good/twin-b.png", encode(twin, note=f"{run} exported again"), Label.GOOD),
        File("unlabeled.png", encode(circle_pixels(9002, bright=False), note=run), None),
    ]


class Verdicts(RoutedReader):
    """Reads the service's ``dataset.validated`` and ``dataset.rejected`` (routed topics)."""

    def __init__(self, settings: StackSettings, routes: dict[str, str]) -> None:
        super().__init__(settings, routes, VERDICTS)

    async def first_for(self, dataset_id: str, version: int = 1) -> Event[Any]:
        """The first verdict about ``dataset_id`` v``version`` (others are skipped)."""
        found: list[Event[Any]] = []

        async def probe() -> Event[Any] | None:
            found.extend(
                e
                for e in await self.read()
                if (e.payload.dataset_id, e.payload.version) == (dataset_id, version)
            )
            return found[0] if found else None

        return await eventually(probe, within=60, what=f"a verdict about {dataset_id}")


@dataclass
class Stack:
    settings: StackSettings
    objects: ObjectStore
    s3: Minio
    db: AsyncIOMotorDatabase[Any]
    bus: RoutedBus
    verdicts: Verdicts
    datasets: list[str]
    images: list[str]

    async def stage(
        self, files: list[File], *, dataset_id: str | None = None, version: int = 1
    ) -> tuple[str, DatasetLabeled]:
        dataset_id = dataset_id or unique("it-val")
        self.datasets.append(dataset_id)
        self.images.extend(content_key("raw", sha256_hex(f.data)) for f in files)
        return dataset_id, await stage_version(self.objects, dataset_id, files, version=version)

    def remove_everything_staged(self) -> None:
        remove_objects(self.s3, Bucket.DATASETS, *(f"{d}/" for d in self.datasets))
        remove_objects(self.s3, Bucket.IMAGES, *self.images)

    async def json(self, key: str) -> Any:
        return json.loads(await self.objects.get_verified(Bucket.DATASETS, key))


@pytest.fixture
async def routes(settings: StackSettings) -> AsyncIterator[dict[str, str]]:
    """Topics of this test's own for what validation consumes and produces."""
    topics = (Topic.DATASET_LABELED, *VERDICTS)
    async for routes in routed_topics(settings, topics, "it-validation"):
        yield routes


@pytest.fixture
async def stack(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any], routes: dict[str, str]
) -> AsyncIterator[Stack]:
    s3 = minio_client(settings.minio)
    objects = ObjectStore(s3)
    await objects.ensure_buckets(Bucket.IMAGES, Bucket.DATASETS)
    # The service's own wiring (see __main__), on this test's own topics.
    bus = service_bus(settings, "it-validation", mongo_db, routes, max_wait=0.2)
    store = MongoValidationStore(mongo_db)
    await store.ensure_indexes()
    handlers.register(bus, ValidationService(store, objects, bus.emit, rules=Rules()))
    verdicts = Verdicts(settings, routes)
    await verdicts.start()
    await bus.broker.start()
    running = Stack(settings, objects, s3, mongo_db, bus, verdicts, [], [])
    try:
        yield running
    finally:
        await bus.broker.stop()
        await verdicts.stop()
        await asyncio.to_thread(running.remove_everything_staged)


async def test_a_clean_version_is_validated_and_its_split_and_reports_are_stored(
    stack: Stack,
) -> None:
    dataset_id, cause = await stack.stage(clean_version(unique("run")))
    await stack.bus.publish(cause)

    event = await stack.verdicts.first_for(dataset_id)
    assert isinstance(event, DatasetValidated), event
    assert event.causation_id == cause.event_id
    payload = event.payload
    prefix = version_prefix(dataset_id, 1)
    assert payload.split_key == f"{prefix}/validation/attempts/1/split.json"
    assert payload.report_key == f"{prefix}/validation/attempts/1/report.json"
    assert payload.report_html_key == f"{prefix}/validation/attempts/1/report.html"
    for recorded, fixed in (
        (payload.split_key, f"{prefix}/split.json"),
        (payload.report_key, f"{prefix}/validation/report.json"),
    ):
        assert await stack.json(fixed) == await stack.json(recorded)

    counts = payload.split_counts
    assert counts.train + counts.validation + counts.test == 48
    split = Split.model_validate(await stack.json(payload.split_key))
    assert len(split.assignments) == 48
    for name in ("train", "validation", "test"):
        assert sum(1 for s in split.assignments.values() if s == name) == getattr(counts, name)
    report = ValidationReport.model_validate(await stack.json(payload.report_key))
    assert report.passed
    assert report.dataset_digest == payload.dataset_digest
    slack = max(1, report.near_duplicates.largest_group)
    for per_split in report.split.per_class.values():
        assert abs(per_split["train"] - 0.7 * 24) <= slack
        assert abs(per_split["validation"] - 0.15 * 24) <= slack
        assert abs(per_split["test"] - 0.15 * 24) <= slack
    html = (await stack.objects.get_verified(Bucket.DATASETS, payload.report_html_key)).decode()
    assert "VALIDATED" in html
    assert "<code>split_drift</code>" in html

    record = await stack.db[REPORTS].find_one({"_id": f"{dataset_id}@v1"})
    assert record is not None
    assert (record["passed"], record["dataset_digest"]) == (True, payload.dataset_digest)


async def test_a_poisoned_version_is_rejected_naming_each_problem(stack: Stack) -> None:
    dataset_id, cause = await stack.stage(poisoned_version(unique("run")))
    await stack.bus.publish(cause)

    event = await stack.verdicts.first_for(dataset_id)
    assert isinstance(event, DatasetRejected), event
    prefix = version_prefix(dataset_id, 1)
    failures = {f.name: f for f in event.payload.failures}
    assert failures["images_decode"].observed == 1
    assert "good/corrupt.png" in failures["images_decode"].message
    assert failures["no_exact_duplicates"].observed == 1
    assert "good/twin-a.png = good/twin-b.png" in failures["no_exact_duplicates"].message
    assert failures["labels_complete_and_allowed"].observed == 1
    assert "1 image(s) unlabeled: unlabeled.png" in failures["labels_complete_and_allowed"].message
    assert failures["min_images_per_class"].observed == 5
    assert failures["min_images_per_class"].message == "class 'bad' has 5"
    assert failures["enough_for_model"].message.startswith("too few defective images in")

    assert event.payload.report_key == f"{prefix}/validation/attempts/1/report.json"
    report = ValidationReport.model_validate(await stack.json(event.payload.report_key))
    assert not report.passed
    assert report.class_ratio == pytest.approx(26 / 5)
    assert report.split_key is None
    assert not await stack.objects.exists(Bucket.DATASETS, f"{prefix}/split.json")
    record = await stack.db[REPORTS].find_one({"_id": f"{dataset_id}@v1"})
    assert record is not None
    assert record["passed"] is False


async def test_a_later_version_keeps_the_split_of_the_last_validated_one(stack: Stack) -> None:
    run = unique("run")
    first = clean_version(run)
    dataset_id, cause = await stack.stage(first)
    await stack.bus.publish(cause)
    assert isinstance(await stack.verdicts.first_for(dataset_id), DatasetValidated)
    # v2 is rejected (a corrupt image): it has no split, and v3 inherits v1's.
    corrupt = File(
        "good/corrupt.png", encode(circle_pixels(9001, bright=True), note=run)[:300], Label.GOOD
    )
    _, rejected = await stack.stage([*first, corrupt], dataset_id=dataset_id, version=2)
    await stack.bus.publish(rejected)
    assert isinstance(await stack.verdicts.first_for(dataset_id, 2), DatasetRejected)
    later = [*first, *[good(200 + i, note=run) for i in range(6)]]
    _, cause3 = await stack.stage(later, dataset_id=dataset_id, version=3)
    await stack.bus.publish(cause3)

    event = await stack.verdicts.first_for(dataset_id, 3)
    assert isinstance(event, DatasetValidated), event
    v1 = Split.model_validate(await stack.json(f"{version_prefix(dataset_id, 1)}/split.json"))
    v3 = Split.model_validate(await stack.json(event.payload.split_key))
    assert v3.inherited_from == 1
    assert {sha: v3.assignments[sha] for sha in v1.assignments} == v1.assignments
    assert len(v3.assignments) == 54
