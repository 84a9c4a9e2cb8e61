"""Validation's core with in-memory stores, the HTML report, and the handler on FastStream's
in-memory broker."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from faststream.kafka import TestKafkaBroker
from screwops_bus import Bus
from screwops_contracts import (
    DatasetLabeled,
    DatasetRejected,
    DatasetValidated,
    Event,
    Topic,
)
from screwops_contracts.datasets import Bucket, Label, LabelSet, Split, canonical_json
from screwops_contracts.models import ModelKind
from screwops_errors import InvalidInputError, NotFoundError
from screwops_storage import sha256_hex
from screwops_validation import handlers
from screwops_validation.config import Rules, Thresholds
from screwops_validation.report import ValidationReport, render_html
from screwops_validation.service import ValidationService, report_keys

from tests.fakes import FakeObjects, RecordingBus, memory_bus
from tests.unit.validation.builders import (
    File,
    bad,
    balanced,
    circle_pixels,
    encode,
    good,
    stage_version,
)
from tests.unit.validation.fakes import FakeStore

ASSERTIONS = [
    "images_decode",
    "single_size_and_mode",
    "labels_complete_and_allowed",
    "min_images_per_class",
    "enough_for_model",
    "no_exact_duplicates",
    "no_exact_duplicates_across_splits",
    "near_duplicates",
    "split_drift",
]


@dataclass
class Parts:
    store: FakeStore = field(default_factory=FakeStore)
    objects: FakeObjects = field(default_factory=FakeObjects)
    emitted: RecordingBus = field(default_factory=lambda: RecordingBus("validation"))

    def service(self, rules: Thresholds | None = None) -> ValidationService:
        return ValidationService(
            self.store,
            self.objects,
            self.emitted.emit,
            rules=Rules(rules or Thresholds(), concurrency=4),
        )

    def json(self, key: str) -> Any:
        return json.loads(self.objects.objects[(Bucket.DATASETS, key)])


async def judged(service: ValidationService, event: DatasetLabeled) -> ValidationReport:
    """The report of a validation that held its claim to the end (no other attempt here)."""
    report = await service.on_dataset_labeled(event)
    assert report is not None
    return report


def poisoned() -> list[File]:
    twin = circle_pixels(500, bright=True)
    return [
        *[good(i) for i in range(24)],
        *[bad(1000 + i) for i in range(5)],
        File("good/corrupt.png", encode(circle_pixels(99, bright=True))[:300], Label.GOOD),
        File("good/twin-a.png", encode(twin), Label.GOOD),
        File("good/twin-b.png", encode(twin, note="exported again"), Label.GOOD),
        File("unlabeled.png", encode(circle_pixels(98, bright=False)), None),
    ]


async def test_a_clean_version_is_validated_with_its_split_reports_and_digest() -> None:
    parts = Parts()
    cause = await stage_version(parts.objects, "screws", balanced(25))
    report = await judged(parts.service(), cause)

    assert report.passed, [a for a in report.assertions if not a.passed]
    assert [a.name for a in report.assertions] == ASSERTIONS
    [event] = parts.emitted
    assert isinstance(event, DatasetValidated)
    assert event.causation_id == cause.event_id
    keys = report_keys("screws", 1, 1)
    payload = event.payload
    assert (payload.split_key, payload.report_key, payload.report_html_key) == (
        "screws/v1/validation/attempts/1/split.json",
        "screws/v1/validation/attempts/1/report.json",
        "screws/v1/validation/attempts/1/report.html",
    )
    assert payload.report_key == keys.report
    fixed = report_keys("screws", 1)
    for recorded, copy in zip(keys.model_dump().values(), fixed.model_dump().values(), strict=True):
        assert (
            parts.objects.objects[(Bucket.DATASETS, copy)]
            == (parts.objects.objects[(Bucket.DATASETS, recorded)])
        )
    assert fixed.split == "screws/v1/split.json"
    counts = payload.split_counts
    assert counts.train + counts.validation + counts.test == 50
    for per_split in report.split.per_class.values():
        assert abs(per_split["train"] - 0.7 * 25) <= 1
        assert abs(per_split["validation"] - 0.15 * 25) <= 1
        assert abs(per_split["test"] - 0.15 * 25) <= 1
    split = Split.model_validate(parts.json(payload.split_key))
    assert len(split.assignments) == 50
    assert sum(1 for s in split.assignments.values() if s == "train") == counts.train
    stored = ValidationReport.model_validate(parts.json(payload.report_key))
    assert stored == report
    assert payload.dataset_digest == report.dataset_digest
    record = parts.store.reports["screws@v1"]
    assert (record.passed, record.dataset_digest, record.split_key) == (
        True,
        payload.dataset_digest,
        payload.split_key,
    )
    labels = LabelSet.model_validate(parts.json(cause.payload.labels_key))
    rows = sorted(
        [label.sha256, label.label.value, label.defect_type, split.assignments[label.sha256]]
        for label in labels.labels
    )
    assert payload.dataset_digest == hashlib.sha256(canonical_json(rows)).hexdigest()


async def test_validating_again_rewrites_the_same_bytes_and_emits_the_same_event() -> None:
    parts = Parts()
    cause = await stage_version(parts.objects, "screws", balanced(22))
    await parts.service().on_dataset_labeled(cause)
    first = dict(parts.objects.objects)
    await parts.service().on_dataset_labeled(cause)
    assert parts.objects.objects == first
    one, two = parts.emitted
    assert one.event_id == two.event_id
    assert one.payload == two.payload


async def test_a_poisoned_version_is_rejected_naming_each_problem_with_its_numbers() -> None:
    parts = Parts()
    cause = await stage_version(parts.objects, "screws", poisoned())
    report = await judged(parts.service(), cause)

    [event] = parts.emitted
    assert isinstance(event, DatasetRejected)
    failures = {f.name: f for f in event.payload.failures}
    assert {
        "images_decode",
        "labels_complete_and_allowed",
        "min_images_per_class",
        "enough_for_model",
        "no_exact_duplicates",
    } <= failures.keys()
    assert failures["images_decode"].observed == 1
    assert "good/corrupt.png" in failures["images_decode"].message
    assert failures["labels_complete_and_allowed"].observed == 1
    assert "unlabeled.png" in failures["labels_complete_and_allowed"].message
    assert failures["min_images_per_class"].observed == 5
    assert failures["min_images_per_class"].message == "class 'bad' has 5"
    assert failures["enough_for_model"].message.startswith("too few defective images in")
    assert report.class_ratio == pytest.approx(26 / 5)
    assert failures["no_exact_duplicates"].observed == 1
    assert "twin-a.png = good/twin-b.png" in failures["no_exact_duplicates"].message
    assert event.payload.report_key == "screws/v1/validation/attempts/1/report.json"
    assert (Bucket.DATASETS, "screws/v1/validation/report.json") in parts.objects.objects
    assert not [key for _, key in parts.objects.objects if key.endswith("split.json")]
    assert (Bucket.DATASETS, "screws/v1/validation/report.html") in parts.objects.objects
    assert report.dataset_digest is None
    assert [u.filename for u in report.undecodable] == ["good/corrupt.png"]
    record = parts.store.reports["screws@v1"]
    assert not record.passed
    assert {a.name for a in record.assertions if not a.passed} == failures.keys()


@pytest.mark.parametrize(("good_count", "bad_count"), [(60, 20), (400, 20)])
async def test_an_imbalanced_set_is_validated_and_its_ratio_reported(
    good_count: int, bad_count: int
) -> None:
    parts = Parts()
    files = [good(i) for i in range(good_count)] + [bad(1000 + i) for i in range(bad_count)]
    report = await judged(parts.service(), await stage_version(parts.objects, "screws", files))
    assert report.passed, [a for a in report.assertions if not a.passed]
    assert report.class_ratio == good_count / bad_count
    assert isinstance(parts.emitted[0], DatasetValidated)
    assert f"Class ratio (majority / minority): {good_count // bad_count}" in render_html(report)


async def test_a_set_without_defects_is_rejected_for_a_supervised_model_not_a_good_only_one() -> (
    None
):
    files = [good(i) for i in range(80)]
    supervised = Parts()
    await supervised.service().on_dataset_labeled(
        await stage_version(supervised.objects, "screws", files)
    )
    [rejected] = supervised.emitted
    assert isinstance(rejected, DatasetRejected)
    failures = {f.name: f for f in rejected.payload.failures}
    assert failures["enough_for_model"].message.startswith(
        "no defective image: a supervised model has nothing to learn defects from"
    )

    good_only = Parts()
    rules = Thresholds(model_kind=ModelKind.GOOD_ONLY, min_good_for_threshold=10)
    report = await judged(
        good_only.service(rules), await stage_version(good_only.objects, "screws", files)
    )
    assert report.passed, [a for a in report.assertions if not a.passed]
    assert isinstance(good_only.emitted[0], DatasetValidated)


async def test_a_later_version_keeps_every_earlier_image_in_its_split() -> None:
    parts = Parts()
    first = [
        replace(f, origin_split="test") if i % 4 == 0 else replace(f, origin_split="train")
        for i, f in enumerate(balanced(22))
    ]
    await parts.service().on_dataset_labeled(await stage_version(parts.objects, "screws", first))
    v1 = Split.model_validate(parts.json("screws/v1/split.json"))
    tested_good = {
        sha256_hex(f.data) for f in first if f.origin_split == "test" and f.label == Label.GOOD
    }
    assert len(tested_good) == 6
    assert all(v1.assignments[sha] != "train" for sha in tested_good)

    later = [*first, *balanced(8, offset=300)]
    cause = await stage_version(parts.objects, "screws", later, version=2)
    report = await judged(parts.service(), cause)

    assert report.passed, [a for a in report.assertions if not a.passed]
    v2 = Split.model_validate(parts.json("screws/v2/split.json"))
    assert v2.inherited_from == 1
    assert {sha: v2.assignments[sha] for sha in v1.assignments} == v1.assignments
    assert (report.split.inherited_from, report.split.kept) == (1, 44)
    assert len(v2.assignments) == 60


async def test_a_missing_manifest_or_a_label_set_of_another_version_is_refused() -> None:
    parts = Parts()
    cause = await stage_version(parts.objects, "screws", balanced(2))
    del parts.objects.objects[(Bucket.DATASETS, "screws/v1/manifest.json")]
    with pytest.raises(NotFoundError):
        await parts.service().on_dataset_labeled(cause)

    other = await stage_version(parts.objects, "screws", balanced(2), version=2)
    wrong = DatasetLabeled.origin(
        other.payload.model_copy(update={"labels_key": cause.payload.labels_key}),
        producer="labeling",
    )
    with pytest.raises(InvalidInputError, match="label set is for screws v1, not screws v2"):
        await parts.service().on_dataset_labeled(wrong)
    assert parts.emitted == []


async def test_the_html_report_is_self_contained_and_lists_every_assertion() -> None:
    parts = Parts()
    files = [*balanced(21), File("bad/<script>.png", encode(circle_pixels(5, bright=False)), None)]
    cause = await stage_version(parts.objects, "screws", files)
    report = await judged(parts.service(), cause)
    html = render_html(report)
    stored = parts.objects.objects[(Bucket.DATASETS, "screws/v1/validation/report.html")]
    assert stored.decode() == html

    for forbidden in ("http://", "https://", "<link", "<script", "src=", "@import", "url("):
        assert forbidden not in html, forbidden
    assert "&lt;script&gt;.png" in html
    assert "<style>" in html
    for name in ASSERTIONS:
        assert f"<code>{name}</code>" in html
    assert "REJECTED" in html
    assert "FAIL" in html
    for heading in ("Classes", "Split", "Drift between splits", "Near duplicates"):
        assert f"<h2>{heading}</h2>" in html
    brightness = report.class_stats[0].brightness.mean
    assert f"{brightness:.4g}" in html


# --- the handler on the in-memory broker -------------------------------------------------------


@dataclass
class Wired:
    bus: Bus
    parts: Parts
    received: list[Event[Any]]


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    parts = Parts()
    bus = memory_bus("validation")
    service = ValidationService(parts.store, parts.objects, bus.emit, rules=Rules(concurrency=4))
    handlers.register(bus, service)
    received: list[Event[Any]] = []

    @bus.broker.subscriber(Topic.DATASET_VALIDATED)
    async def on_validated(event: DatasetValidated) -> None:
        received.append(event)

    @bus.broker.subscriber(Topic.DATASET_REJECTED)
    async def on_rejected(event: DatasetRejected) -> None:
        received.append(event)

    async with TestKafkaBroker(bus.broker):
        yield Wired(bus, parts, received)


async def test_the_handler_emits_dataset_validated(wired: Wired) -> None:
    cause = await stage_version(wired.parts.objects, "screws", balanced(20))
    await wired.bus.publish(cause)
    [event] = wired.received
    assert isinstance(event, DatasetValidated)
    assert (event.producer, event.causation_id) == ("validation", cause.event_id)
    assert event.correlation_id == cause.correlation_id
    assert (
        event.payload.split_counts.train
        + event.payload.split_counts.validation
        + (event.payload.split_counts.test)
        == 40
    )


async def test_the_handler_emits_dataset_rejected(wired: Wired) -> None:
    cause = await stage_version(wired.parts.objects, "screws", poisoned())
    await wired.bus.publish(cause)
    await wired.bus.publish(cause)  # redelivered: no second effect
    [event] = wired.received
    assert isinstance(event, DatasetRejected)
    assert "min_images_per_class" in {f.name for f in event.payload.failures}
