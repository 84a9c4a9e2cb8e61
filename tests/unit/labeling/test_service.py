"""Labeling's domain logic on in-memory fakes: versions from ``dataset.ingested``, annotators,
imports, closing a version, and the review queue."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta

import pytest
from screwops_bus import Announcement, outbox
from screwops_contracts import DatasetLabeled, InspectionCompleted, InspectionReviewed
from screwops_contracts.datasets import Bucket, ImageLabel, Label, LabelSet
from screwops_errors import FailedPreconditionError, InvalidInputError, NotFoundError
from screwops_labeling.label_files import LabelFileFormat
from screwops_labeling.store import VersionEnd, VersionStatus

from tests.fakes import relayed
from tests.unit.labeling.fakes import START, Harness, harness, inspection, training_requested

GOOD, BAD = Label.GOOD, Label.BAD


def labeled_events(h: Harness) -> list[DatasetLabeled]:
    return [e for e in h.emitted if isinstance(e, DatasetLabeled)]


def label(sha256: str, value: Label) -> ImageLabel:
    return ImageLabel(
        sha256=sha256, label=value, source="manual", annotator="ana", labeled_at=START
    )


def label_set(h: Harness, dataset_id: str, version: int) -> LabelSet:
    body = h.objects.objects[(Bucket.DATASETS, f"{dataset_id}/v{version}/labels.json")]
    return LabelSet.model_validate_json(body)


# --- dataset.ingested ----------------------------------------------------------------------------


async def test_a_version_labeled_by_its_layout_is_announced_at_once() -> None:
    h = harness()
    event, images = h.ingest("screws", 1, [("good/0.png", GOOD), ("bad/0.png", BAD)])

    await h.service.on_dataset_ingested(event)

    [labeled] = labeled_events(h)
    assert labeled.payload.label_counts == {"good": 1, "bad": 1}
    assert labeled.payload.excluded_count == 0
    assert labeled.payload.closed_by is None
    assert labeled.payload.labels_key == "screws/v1/labels.json"
    assert labeled.causation_id == event.event_id
    assert labeled.correlation_id == event.correlation_id
    labels = label_set(h, "screws", 1)
    assert [label.sha256 for label in labels.labels] == [image.sha256 for image in images]
    assert {label.source for label in labels.labels} == {"import"}
    assert [label.defect_type for label in labels.labels if label.label is BAD] == ["scratch_head"]


async def test_a_duplicate_dataset_ingested_changes_nothing() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("good/0.png", GOOD), ("x.png", None)])

    await h.service.on_dataset_ingested(event)
    snapshot = (dict(h.store.records), dict(h.store.label_docs), dict(h.store.version_images))
    await h.service.on_dataset_ingested(event)

    assert (dict(h.store.records), dict(h.store.label_docs), dict(h.store.version_images)) == (
        snapshot
    )
    assert labeled_events(h) == []


async def test_a_redelivery_after_a_crash_before_the_ack_emits_the_same_event_again() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("good/0.png", GOOD)])
    await h.service.on_dataset_ingested(event)
    [sent] = labeled_events(h)
    record = h.store.records[("screws", 1)]
    # The crash: the event went out but was not removed from the version's outbox.
    h.store.records[("screws", 1)] = replace(record, pending=(Announcement(sent),))

    await h.service.on_dataset_ingested(event)

    assert labeled_events(h) == [sent, sent]
    assert h.store.records[("screws", 1)].pending == ()


async def test_recover_ends_a_version_a_crash_left_open_though_fully_labeled() -> None:
    h = harness()
    event, [image] = h.ingest("screws", 1, [("a.png", None)])
    await h.service.on_dataset_ingested(event)
    # The crash: the last label was stored, the version not yet ended.
    await h.store.put_labels("screws", [label(image.sha256, GOOD)], replace=True)

    await h.service.recover()

    [labeled] = labeled_events(h)
    assert labeled.payload.label_counts == {"good": 1, "bad": 0}
    record = h.store.records[("screws", 1)]
    assert (record.status, record.pending) == (VersionStatus.LABELED, ())


async def test_recover_queues_what_versions_ended_before_the_outbox_still_owed() -> None:
    """A version that ended before the outbox with ``published: false`` was announced only by
    the start-up pass the outbox replaced: recover() queues its dataset.labeled (with its
    labels.json) for the relay, once; an open one owes nothing until it ends."""
    h = harness()
    event, [image] = h.ingest("screws", 1, [("a.png", None)])
    await h.service.on_dataset_ingested(event)
    other, _ = h.ingest("bolts", 1, [("b.png", None)])
    await h.service.on_dataset_ingested(other)
    await h.store.put_labels("screws", [label(image.sha256, BAD)], replace=True)
    record = h.store.records[("screws", 1)]
    h.store.records[("screws", 1)] = replace(record, status=VersionStatus.LABELED, ended_at=START)
    h.store.unannounced = {("screws", 1), ("bolts", 1)}

    await h.service.recover()
    await h.service.recover()

    [owed] = h.store.records[("screws", 1)].pending
    assert h.store.records[("bolts", 1)].pending == ()
    assert label_set(h, "screws", 1).labels[0].label is BAD
    await relayed(h.store, h.emitted, 1)
    assert labeled_events(h) == [owed.event]
    assert owed.event.causation_id == event.event_id
    assert owed.event.payload.label_counts == {"good": 0, "bad": 1}


async def test_a_last_label_whose_announcement_kafka_refused_is_announced_by_the_relay() -> None:
    """Issue 18, finding 2: the last label ends the version while Kafka is away; its
    dataset.labeled goes out once Kafka is back, without a restart and without another request
    (none would come: the version is no longer open)."""
    h = harness()
    event, [image] = h.ingest("screws", 1, [("a.png", None)])
    await h.service.on_dataset_ingested(event)

    h.emitted.down = True
    assert await h.service.submit_label("screws", image.sha256, BAD, annotator="ana") == 0
    record = h.store.records[("screws", 1)]
    assert record.status is VersionStatus.LABELED
    assert labeled_events(h) == []
    [pending] = record.pending
    assert label_set(h, "screws", 1).labels[0].label is BAD, "written before it is announced"

    h.emitted.down = False
    await relayed(h.store, h.emitted, 1)
    assert labeled_events(h) == [pending.event]
    assert pending.event.causation_id == event.event_id
    assert pending.event.payload.labels_key == "screws/v1/labels.json"


async def test_a_last_label_while_kafka_stalls_answers_and_leaves_its_event_to_the_relay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kafka away: the producer holds the send, and the last label with it, past its caller's
    deadline; the version's event is left pending instead."""
    monkeypatch.setattr(outbox, "PUBLISH_NOW_S", 0.05)
    h = harness()
    event, [image] = h.ingest("screws", 1, [("a.png", None)])
    await h.service.on_dataset_ingested(event)
    h.emitted.gate = asyncio.Event()

    labeling = h.service.submit_label("screws", image.sha256, BAD, annotator="ana")
    assert await asyncio.wait_for(labeling, 1) == 0

    [pending] = h.store.records[("screws", 1)].pending
    h.emitted.gate.set()
    await relayed(h.store, h.emitted, 1)
    assert labeled_events(h) == [pending.event]


async def test_a_version_ends_the_way_its_end_was_claimed_first() -> None:
    """A close that claimed the end (and crashed, or was overtaken) wins over the last label
    that came after it: the version is closed, labels.json and the event say so."""
    h = harness()
    event, images = h.ingest("screws", 1, [("a.png", None), ("b.png", None)])
    await h.service.on_dataset_ingested(event)
    first, last = (image.sha256 for image in images)
    await h.service.submit_label("screws", first, GOOD, annotator="ana")
    close = VersionEnd(VersionStatus.CLOSED, at=h.clock.now, excluded=(last,), closed_by="op")
    await h.store.claim_end("screws", 1, close)

    await h.service.submit_label("screws", last, BAD, annotator="ana")

    record = h.store.records[("screws", 1)]
    assert (record.status, record.excluded, record.ending) == (VersionStatus.CLOSED, (last,), None)
    [labeled] = labeled_events(h)
    assert (labeled.payload.closed_by, labeled.payload.excluded_count) == ("op", 1)
    written = label_set(h, "screws", 1)
    assert ([lab.sha256 for lab in written.labels], written.excluded) == ([first], [last])


async def test_another_event_for_a_recorded_version_is_refused() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("good/0.png", GOOD)])
    await h.service.on_dataset_ingested(event)
    impostor, _ = h.ingest("screws", 1, [("good/1.png", GOOD)])

    with pytest.raises(FailedPreconditionError, match="already announced"):
        await h.service.on_dataset_ingested(impostor)


async def test_a_missing_or_mismatched_manifest_is_a_permanent_error() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("good/0.png", GOOD)])
    other, _ = h.ingest("screws", 2, [("good/1.png", GOOD)])
    h.objects.objects[(Bucket.DATASETS, "screws/v1/manifest.json")] = h.objects.objects[
        (Bucket.DATASETS, "screws/v2/manifest.json")
    ]
    with pytest.raises(InvalidInputError, match="describes screws v2, not screws v1"):
        await h.service.on_dataset_ingested(event)

    del h.objects.objects[(Bucket.DATASETS, "screws/v2/manifest.json")]
    with pytest.raises(NotFoundError):
        await h.service.on_dataset_ingested(other)


async def test_a_new_version_asks_only_for_its_new_images() -> None:
    h = harness()
    v1, first = h.ingest("screws", 1, [("a.png", None)])
    await h.service.on_dataset_ingested(v1)
    await h.service.submit_label("screws", first[0].sha256, GOOD, annotator="ana")
    v2, _ = h.ingest("screws", 2, [("b.png", None)], carried=first)

    await h.service.on_dataset_ingested(v2)

    task = await h.service.next_unlabeled("screws", "ana")
    assert (task.image.filename, task.image.version, task.remaining) == ("b.png", 2, 1)


async def test_a_layout_label_never_overwrites_a_persons_label() -> None:
    h = harness()
    v1, first = h.ingest("screws", 1, [("a.png", None)])
    await h.service.on_dataset_ingested(v1)
    await h.service.submit_label("screws", first[0].sha256, BAD, annotator="ana")
    relabeled = first[0].model_copy(update={"label": GOOD})
    v2, _ = h.ingest("screws", 2, [], carried=[relabeled])

    await h.service.on_dataset_ingested(v2)

    assert label_set(h, "screws", 2).labels[0].label is BAD


# --- annotators ----------------------------------------------------------------------------------


async def test_two_annotators_get_different_images_and_the_same_one_twice() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("a.png", None), ("b.png", None)])
    await h.service.on_dataset_ingested(event)

    ana = await h.service.next_unlabeled("screws", "ana")
    bo = await h.service.next_unlabeled("screws", "bo")
    again = await h.service.next_unlabeled("screws", "ana")

    assert ana.image.sha256 != bo.image.sha256
    assert again.image.sha256 == ana.image.sha256
    assert ana.data == b"screws/" + ana.image.filename.encode()
    assert ana.reserved_until == h.clock.now + timedelta(minutes=10)
    assert ana.remaining == 2
    with pytest.raises(NotFoundError, match="labeled or reserved"):
        await h.service.next_unlabeled("screws", "cy")


async def test_an_expired_reservation_goes_to_the_next_annotator() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("a.png", None)])
    await h.service.on_dataset_ingested(event)
    ana = await h.service.next_unlabeled("screws", "ana")

    h.clock.advance(601)

    assert (await h.service.next_unlabeled("screws", "bo")).image == ana.image


async def test_the_last_label_announces_the_version() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("a.png", None), ("b.png", GOOD)])
    await h.service.on_dataset_ingested(event)
    task = await h.service.next_unlabeled("screws", "ana")
    assert labeled_events(h) == []

    remaining = await h.service.submit_label(
        "screws", task.image.sha256, BAD, annotator="ana", defect_type=" thread_top "
    )

    assert remaining == 0
    [labeled] = labeled_events(h)
    assert labeled.payload.label_counts == {"good": 1, "bad": 1}
    assert labeled.causation_id == event.event_id
    manual = next(label for label in label_set(h, "screws", 1).labels if label.source == "manual")
    assert (manual.annotator, manual.defect_type, manual.labeled_at) == (
        "ana",
        "thread_top",
        h.clock.now,
    )
    with pytest.raises(NotFoundError, match="nothing to label"):
        await h.service.next_unlabeled("screws", "ana")


@pytest.mark.parametrize(
    ("sha", "label", "defect", "error", "match"),
    [
        ("nope", GOOD, None, InvalidInputError, "sha256"),
        ("0" * 64, GOOD, "scratch_head", InvalidInputError, "good image has no defect type"),
        ("0" * 64, GOOD, None, NotFoundError, "in no open version"),
    ],
)
async def test_a_bad_label_is_refused_precisely(
    sha: str, label: Label, defect: str | None, error: type[Exception], match: str
) -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("a.png", None)])
    await h.service.on_dataset_ingested(event)

    with pytest.raises(error, match=match):
        await h.service.submit_label("screws", sha, label, annotator="ana", defect_type=defect)


async def test_required_fields_and_unknown_datasets() -> None:
    h = harness()
    with pytest.raises(InvalidInputError, match="annotator is required"):
        await h.service.next_unlabeled("screws", "  ")
    with pytest.raises(NotFoundError, match="unknown dataset 'nope'"):
        await h.service.next_unlabeled("nope", "ana")
    with pytest.raises(NotFoundError, match="unknown dataset"):
        await h.service.close_version("nope", "op")


# --- imports -------------------------------------------------------------------------------------


async def test_a_csv_import_counts_every_row_and_completes_the_version() -> None:
    h = harness()
    event, images = h.ingest(
        "screws", 1, [("train/good/0.png", GOOD), ("1.png", None), ("2.png", None)]
    )
    await h.service.on_dataset_ingested(event)
    csv = (
        "filename,label,defect_type\n"
        "train/good/0.png,good,\n"  # unchanged: the layout said so already
        "1.png,not-good,thread_side\n"  # applied by base name
        f"{images[[i.filename for i in images].index('2.png')].sha256},ok,\n"  # applied by digest
        "3.png,good,\n"  # unmatched
        "4.png,maybe,\n"  # invalid
    ).encode()

    report = await h.service.import_labels("screws", LabelFileFormat.CSV, csv, annotator="importer")

    assert (report.applied, report.unchanged, report.unmatched, report.invalid) == (2, 1, 1, 1)
    assert [(p.row, p.reference) for p in report.problems] == [(5, "3.png"), (6, "4.png")]
    assert "unknown label 'maybe'" in report.problems[1].reason
    assert report.remaining == 0
    [labeled] = labeled_events(h)
    assert labeled.payload.label_counts == {"good": 2, "bad": 1}
    sources = {label.source for label in label_set(h, "screws", 1).labels}
    assert sources == {"import", "file"}


async def test_importing_the_same_export_twice_changes_nothing() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("1.png", None), ("2.png", None)])
    await h.service.on_dataset_ingested(event)
    export = json.dumps([{"image": "/data/upload/1/0a1b2c3d-1.png", "choice": "bad"}]).encode()

    first = await h.service.import_labels(
        "screws", LabelFileFormat.LABEL_STUDIO_JSON_MIN, export, annotator="ls"
    )
    second = await h.service.import_labels(
        "screws", LabelFileFormat.LABEL_STUDIO_JSON_MIN, export, annotator="ls"
    )

    assert (first.applied, first.unchanged, first.remaining) == (1, 0, 1)
    assert (second.applied, second.unchanged, second.remaining) == (0, 1, 1)


async def test_a_later_row_for_the_same_image_wins() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("1.png", None), ("2.png", GOOD)])
    await h.service.on_dataset_ingested(event)

    report = await h.service.import_labels(
        "screws", LabelFileFormat.CSV, b"1.png,good\n1.png,bad\n", annotator="ana"
    )

    assert (report.applied, report.remaining) == (2, 0)
    labels = {label.source: label.label for label in label_set(h, "screws", 1).labels}
    assert labels["file"] is BAD


async def test_an_import_into_a_dataset_without_open_version_is_refused() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("1.png", GOOD)])
    await h.service.on_dataset_ingested(event)

    with pytest.raises(FailedPreconditionError, match="no open version"):
        await h.service.import_labels("screws", LabelFileFormat.CSV, b"1.png,bad\n", annotator="a")
    with pytest.raises(InvalidInputError, match="content is empty"):
        await h.service.import_labels("screws", LabelFileFormat.CSV, b"", annotator="a")


# --- closing a version ---------------------------------------------------------------------------


async def test_closing_excludes_and_counts_the_unlabeled_images() -> None:
    h = harness()
    event, images = h.ingest("screws", 1, [("a.png", GOOD), ("b.png", None), ("c.png", None)])
    await h.service.on_dataset_ingested(event)

    closed = await h.service.close_version("screws", "op@plant-7", "weekly retrain")

    unlabeled = sorted(i.sha256 for i in images if i.label is None)
    assert (closed.closed_version, closed.labeled_count, closed.excluded_count) == (1, 1, 2)
    assert closed.open_version == 2
    assert closed.closed_at == h.clock.now
    [labeled] = labeled_events(h)
    assert labeled.payload.excluded_count == 2
    assert labeled.payload.closed_by == "op@plant-7"
    assert labeled.payload.label_counts == {"good": 1, "bad": 0}
    assert label_set(h, "screws", 1).excluded == unlabeled
    assert h.store.records[("screws", 1)].close_reason == "weekly retrain"
    with pytest.raises(FailedPreconditionError, match="no open version"):
        await h.service.close_version("screws", "op@plant-7")


async def test_closing_a_version_without_any_label_is_refused() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("a.png", None)])
    await h.service.on_dataset_ingested(event)

    with pytest.raises(FailedPreconditionError, match="no labeled image"):
        await h.service.close_version("screws", "op")
    assert labeled_events(h) == []


async def test_closing_takes_the_oldest_open_version_and_names_the_next() -> None:
    h = harness()
    v1, first = h.ingest("screws", 1, [("a.png", GOOD), ("b.png", None)])
    await h.service.on_dataset_ingested(v1)
    v2, _ = h.ingest("screws", 2, [("c.png", None)], carried=first)
    await h.service.on_dataset_ingested(v2)

    closed = await h.service.close_version("screws", "op")

    assert (closed.closed_version, closed.open_version, closed.excluded_count) == (1, 2, 1)
    task = await h.service.next_unlabeled("screws", "ana")
    assert (task.image.version, task.remaining) == (2, 2)


# --- review queue --------------------------------------------------------------------------------


async def test_an_inspection_near_its_threshold_is_queued() -> None:
    h = harness()
    event = inspection(verdict="DEFECT", probability=0.6)

    await h.service.on_inspection_completed(event)
    await h.service.on_inspection_completed(event)

    [item] = h.store.reviews.values()
    assert item.inspection_id == str(event.event_id)
    assert item.image_sha256 == "ab" * 32
    assert item.queue_reason.startswith("near threshold")
    assert item.inspected_at == event.occurred_at


@pytest.mark.parametrize(
    "event",
    [
        inspection(probability=0.05),
        inspection(verdict="DEFECT", probability=0.95),
        inspection(probability=0.5, image_key=None),
    ],
)
async def test_a_confident_inspection_or_one_without_image_is_not_queued(
    event: InspectionCompleted,
) -> None:
    h = harness()
    await h.service.on_inspection_completed(event)
    assert h.store.reviews == {}


async def test_an_inspection_contradicting_a_known_label_is_disputed() -> None:
    h = harness()
    event, images = h.ingest("screws", 1, [("a.png", BAD)])
    await h.service.on_dataset_ingested(event)

    await h.service.on_inspection_completed(
        inspection(verdict="GOOD", probability=0.02, image_key=f"inspections/{images[0].key}")
    )

    [item] = h.store.reviews.values()
    assert item.queue_reason == (
        "disputed: verdict GOOD but the image is labeled bad in dataset 'screws'"
    )


async def test_a_sample_is_queued_when_sampling_everything() -> None:
    h = harness(sample_rate=1.0)
    await h.service.on_inspection_completed(inspection(probability=0.01))
    assert [item.queue_reason for item in h.store.reviews.values()] == ["random sample"]


async def test_the_queue_pages_oldest_first_and_filters_by_line() -> None:
    h = harness()
    queued = []
    for n in range(5):
        h.clock.advance(1)
        event = inspection(probability=0.45, line_id="line-1" if n % 2 else "line-2")
        queued.append(event.model_copy(update={"occurred_at": h.clock.now}))
        await h.service.on_inspection_completed(queued[-1])

    first = await h.service.review_queue("", include_images=False, page_size=2, page_token="")
    second = await h.service.review_queue(
        "", include_images=False, page_size=2, page_token=first.next_token
    )
    third = await h.service.review_queue(
        "", include_images=False, page_size=2, page_token=second.next_token
    )
    line_1 = await h.service.review_queue(
        "line-1", include_images=False, page_size=0, page_token=""
    )

    ids = [i.inspection_id for page in (first, second, third) for i in page.items]
    assert ids == [str(e.event_id) for e in queued]
    assert (first.total, third.next_token) == (5, "")
    assert [i.line_id for i in line_1.items] == ["line-1", "line-1"]
    assert line_1.total == 2
    with pytest.raises(InvalidInputError, match="page_token"):
        await h.service.review_queue("", include_images=False, page_size=2, page_token="garbage")


async def test_a_page_with_images_reads_them_from_the_inspections_bucket() -> None:
    h = harness()
    data = b"inspected screw"
    key, _ = h.keep_inspection_image(data)
    await h.service.on_inspection_completed(inspection(probability=0.5, image_key=key))

    page = await h.service.review_queue("", include_images=True, page_size=10, page_token="")

    assert list(page.images.values()) == [data]


async def test_a_review_records_ground_truth_and_labels_the_review_dataset() -> None:
    h = harness()
    event, images = h.ingest("screws", 1, [("a.png", None)])
    await h.service.on_dataset_ingested(event)
    queued = inspection(verdict="GOOD", probability=0.4, image_key=f"x/{images[0].sha256}")
    await h.service.on_inspection_completed(queued)

    result = await h.service.submit_review(
        str(queued.event_id), BAD, reviewer="rev", defect_type="thread_top"
    )

    assert (result.verdict_correct, result.remaining) == (False, 0)
    outcome = h.store.reviews[str(queued.event_id)].outcome
    assert outcome is not None
    assert (outcome.label, outcome.reviewer, outcome.reviewed_at) == (BAD, "rev", h.clock.now)
    [labeled] = labeled_events(h)
    assert labeled.payload.label_counts == {"good": 0, "bad": 1}
    assert label_set(h, "screws", 1).labels[0].source == "review"
    [reviewed] = h.emitted.of(InspectionReviewed)
    assert (reviewed.payload.inspection_id, reviewed.payload.label) == (
        str(queued.event_id),
        "bad",
    )
    assert h.store.reviews[str(queued.event_id)].pending == ()
    with pytest.raises(NotFoundError, match="not in the review queue"):
        await h.service.submit_review("nope", GOOD, reviewer="rev")


async def test_a_review_whose_announcement_kafka_refused_is_announced_by_the_relay() -> None:
    """The reviewer's ground truth is recorded while Kafka is away; its inspection.reviewed
    reaches the monitor once Kafka is back, without another review."""
    h = harness()
    queued = inspection(verdict="DEFECT", probability=0.45)
    await h.service.on_inspection_completed(queued)

    h.emitted.down = True
    result = await h.service.submit_review(str(queued.event_id), GOOD, reviewer="rev")
    assert (result.verdict_correct, result.remaining) == (False, 0)
    assert h.emitted.of(InspectionReviewed) == []
    [pending] = h.store.reviews[str(queued.event_id)].pending

    h.emitted.down = False
    await relayed(h.store, h.emitted, 1)
    assert h.emitted.of(InspectionReviewed) == [pending.event]
    assert pending.event.payload.verdict_correct is False


async def test_inspections_past_the_retention_leave_the_queue_unless_unannounced() -> None:
    """The queue stays bounded when nobody reviews: items older than the retention go, reviewed
    or not, except a review whose inspection.reviewed Kafka has not acknowledged yet."""
    h = harness(retention=timedelta(days=30))

    async def queued(age: timedelta) -> str:
        event = inspection(probability=0.45).model_copy(update={"occurred_at": START - age})
        await h.service.on_inspection_completed(event)
        return str(event.event_id)

    stale, reviewed, unannounced, recent = [
        await queued(timedelta(days=days)) for days in (40, 40, 40, 1)
    ]
    await h.service.submit_review(reviewed, GOOD, reviewer="rev")
    h.emitted.down = True
    await h.service.submit_review(unannounced, GOOD, reviewer="rev")
    sweeper = asyncio.create_task(h.service.keep_expiring(3600))
    await asyncio.sleep(0)  # it expires once at start, then sleeps
    sweeper.cancel()

    assert stale not in h.store.reviews
    assert set(h.store.reviews) == {unannounced, recent}
    assert (
        await h.service.review_queue("", include_images=False, page_size=0, page_token="")
    ).total == 1


# --- training.requested --------------------------------------------------------------------------


async def reviewed(
    h: Harness, picture: bytes, label: Label, defect_type: str | None = None, *, version: int = 4
) -> tuple[str, str]:
    """An image ``version`` inspected and kept, queued and reviewed as ``label``: its inspection
    id and digest."""
    key, sha = h.keep_inspection_image(picture)
    queued = inspection(probability=0.45, image_key=key, model_version=version)
    await h.service.on_inspection_completed(queued)
    await h.service.submit_review(
        str(queued.event_id), label, reviewer="rev", defect_type=defect_type
    )
    return str(queued.event_id), sha


def dropped(h: Harness) -> dict[str, bytes]:
    return {key: data for (bucket, key), data in h.objects.objects.items() if bucket == Bucket.DROP}


async def test_a_training_request_hands_the_reviewed_images_to_its_dataset_as_a_drop() -> None:
    h = harness()
    _, bad = await reviewed(h, b"scratched screw", BAD, "scratch_neck")
    _, good = await reviewed(h, b"fine screw", GOOD)
    await h.service.on_inspection_completed(
        inspection(probability=0.5, image_key="raw/cd/" + "cd" * 32)
    )

    await h.service.on_training_requested(training_requested("line-7"))

    assert dropped(h) == {
        f"line-7/bad/{bad}": b"scratched screw",
        f"line-7/good/{good}": b"fine screw",
        "line-7/_READY": b"",
    }
    labels = await h.store.labels("line-7", [bad, good])
    assert {
        sha: (label.label, label.defect_type, label.source) for sha, label in labels.items()
    } == {
        bad: (BAD, "scratch_neck", "review"),
        good: (GOOD, None, "review"),
    }


async def test_a_second_training_request_hands_over_only_what_was_reviewed_since() -> None:
    h = harness()
    await reviewed(h, b"first screw", GOOD)
    await h.service.on_training_requested(training_requested("line-7"))
    h.objects.objects = {k: v for k, v in h.objects.objects.items() if k[0] != Bucket.DROP}

    await h.service.on_training_requested(training_requested("line-7"))
    assert dropped(h) == {}, "nothing new was reviewed: no batch, no _READY"

    _, later = await reviewed(h, b"second screw", BAD)
    await h.service.on_training_requested(training_requested("line-7"))
    assert dropped(h) == {f"line-7/bad/{later}": b"second screw", "line-7/_READY": b""}


async def test_the_monitor_s_request_brings_the_degraded_version_s_reviews_an_operator_s_all() -> (
    None
):
    h = harness()
    _, older = await reviewed(h, b"seen by version 3", GOOD, version=3)
    _, degraded = await reviewed(h, b"seen by version 4", BAD, version=4)

    await h.service.on_training_requested(training_requested("line-7", degraded_version=4))
    assert set(dropped(h)) == {f"line-7/bad/{degraded}", "line-7/_READY"}

    await h.service.on_training_requested(training_requested("line-8", degraded_version=None))
    assert {f"line-8/good/{older}", f"line-8/bad/{degraded}"} <= set(dropped(h))


async def test_a_review_changed_after_the_handover_relabels_the_dataset_it_went_to() -> None:
    h = harness()
    inspection_id, sha = await reviewed(h, b"screw", GOOD)
    await h.service.on_training_requested(training_requested("line-7"))

    await h.service.submit_review(inspection_id, BAD, reviewer="lead", defect_type="thread_side")

    [label] = (await h.store.labels("line-7", [sha])).values()
    assert (label.label, label.defect_type, label.annotator) == (BAD, "thread_side", "lead")


async def test_a_reviewed_inspection_whose_image_is_gone_stays_behind_and_the_rest_go() -> None:
    h = harness()
    lost_id, lost = await reviewed(h, b"lost screw", GOOD)
    _, kept = await reviewed(h, b"kept screw", BAD)
    del h.objects.objects[(Bucket.INSPECTIONS, h.store.reviews[lost_id].object_key)]

    await h.service.on_training_requested(training_requested("line-7"))

    assert set(dropped(h)) == {f"line-7/bad/{kept}", "line-7/_READY"}
    assert h.store.reviews[lost_id].contributed_to == ()
    assert await h.store.labels("line-7", [lost]) == {}


async def test_closing_a_named_version_twice_answers_the_same_and_closes_nothing_else() -> None:
    h = harness()
    images: list[tuple[str, Label | None]] = [
        ("a.png", Label.GOOD),
        ("b.png", None),
        ("c.png", None),
    ]
    v1, entries = h.ingest("screws", 1, images)
    await h.service.on_dataset_ingested(v1)
    v2, _ = h.ingest("screws", 2, [("d.png", None)], carried=entries)
    await h.service.on_dataset_ingested(v2)
    first = await h.service.close_version("screws", "ops", "retry safe", version=1)
    again = await h.service.close_version("screws", "ops", "retry safe", version=1)
    assert again == first
    assert (first.closed_version, first.excluded_count) == (1, 2)
    assert [v.status.value for v in await h.store.versions("screws")] == ["closed", "open"]
