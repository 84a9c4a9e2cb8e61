"""Labeling a dataset version: every image of it gets a label, then ``dataset.labeled``.

A version arrives with ``dataset.ingested``: its images are recorded, the labels its import layout
gave become labels with provenance ``import``, and images the dataset already had a label for
keep it (labels belong to a dataset and an image, not to a version, so a new version asks only for
its new images). People then label the rest one by one (:meth:`VersionLabeling.next_unlabeled`,
:meth:`VersionLabeling.submit_label`) or in bulk from a labeling tool's export
(:meth:`VersionLabeling.import_labels`). When the last image of a version gets its label, or an
operator closes the version with the unlabeled images excluded, the version ends and
``dataset.labeled`` announces it, caused by the version's ``dataset.ingested`` (its id derives from
that cause, so publishing it twice, after a crash or from two racing callers, publishes one event
twice, which the next consumer drops).

Ending goes in three steps, each safe to repeat by whoever finds it undone: the end is claimed
(the first claim wins, so a close and a last label racing each other end the version one way);
the ``LabelSet`` of the claimed end is written next to the manifest; then one update ends the
version with its ``dataset.labeled`` pending in its outbox (:mod:`screwops_bus.outbox`), so the
event never names a ``labels.json`` that is not there and is never lost. It is published at once;
if Kafka refuses it, the service's outbox relay publishes it once Kafka is back. A crash between
the steps leaves the version open: the next call that meets it, or the start-up
(:meth:`VersionLabeling.recover`), finishes the end.

Several versions of a dataset may be open at once (a new version is ingested while the previous
one is still being labeled). "The dataset's open version" is then the oldest open one: images are
handed out, counted and closed in version order, so versions are announced in order too.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import ValidationError
from screwops_bus import Announcement, Publish, announce_now
from screwops_contracts import (
    DatasetIngested,
    DatasetIngestedPayload,
    DatasetLabeled,
    DatasetLabeledPayload,
)
from screwops_contracts.datasets import (
    Bucket,
    ImageLabel,
    Label,
    LabelSet,
    Manifest,
    labels_key,
)
from screwops_errors import FailedPreconditionError, InvalidInputError, NotFoundError
from screwops_storage import validate_digest
from screwops_telemetry import traceparent

from screwops_labeling.label_files import (
    ImageIndex,
    LabelFileFormat,
    LabelRow,
    RowProblem,
    defect_type_for,
    read_labels,
)
from screwops_labeling.store.versions import (
    VersionEnd,
    VersionImage,
    VersionRecord,
    VersionStatus,
    VersionStore,
)

log = logging.getLogger("screwops.labeling")

PRODUCER = "labeling"
MAX_PROBLEMS = 1000
"""Import problems reported back; the counts are always complete."""


class Objects(Protocol):
    """The part of :class:`screwops_storage.ObjectStore` labeling uses."""

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes: ...

    async def put_named(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ...
    ) -> object: ...


@dataclass(frozen=True)
class LabelTask:
    """An image handed to an annotator, reserved for them until ``reserved_until``."""

    image: VersionImage
    data: bytes
    reserved_until: datetime
    remaining: int


@dataclass(frozen=True)
class ImportReport:
    """What an import changed, row by row."""

    applied: int
    unchanged: int
    unmatched: int
    invalid: int
    problems: list[RowProblem]
    remaining: int


@dataclass(frozen=True)
class ClosedVersion:
    """A version an operator closed, and the version labeling continues with."""

    dataset_id: str
    closed_version: int
    open_version: int
    labeled_count: int
    excluded_count: int
    closed_at: datetime


class VersionLabeling:
    """Labels dataset versions and announces them (see the module docstring)."""

    def __init__(
        self,
        store: VersionStore,
        objects: Objects,
        publish: Publish,
        *,
        reservation: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._objects = objects
        self._publish = publish
        self._reservation = reservation
        self._clock = clock

    # --- events ----------------------------------------------------------------------------------

    async def on_dataset_ingested(self, event: DatasetIngested) -> None:
        """Record a new version and its layout labels; announce it if nothing is left to label.

        Raises:
            NotFoundError: the manifest is not in MinIO.
            InvalidInputError: the manifest is not a manifest of this version.
            FailedPreconditionError: another event already announced this version.
        """
        payload = event.payload
        record = await self._store.get_version(payload.dataset_id, payload.version)
        if record is None:
            record = await self._record(event)
        elif record.event.event_id != event.event_id:
            raise FailedPreconditionError(
                f"{record.id} was already announced by event {record.event.event_id}; "
                "versions are immutable"
            )
        await self._settle(record)

    async def recover(self) -> None:
        """Finish the ends a crash interrupted: versions still open though fully labeled, or
        whose end was claimed. (What ended versions owe Kafka is the outbox relay's, those that
        ended before the outbox and were never announced included: they are queued first.)"""
        await self._store.adopt_unannounced(self._owed_before_the_outbox)
        for record in await self._store.open_versions():
            await self._settle(record)

    async def _owed_before_the_outbox(self, record: VersionRecord) -> Announcement | None:
        """What a version written before the outbox owes: an ended one, its ``labels.json``
        (written again, from the same end, as the start-up pass of then did) and the
        ``dataset.labeled`` naming it; an open one nothing yet."""
        if record.status is VersionStatus.OPEN:
            return None
        end = VersionEnd(
            VersionStatus.CLOSED
            if record.status is VersionStatus.CLOSED
            else VersionStatus.LABELED,
            at=record.ended_at or self._clock(),
            excluded=record.excluded,
            closed_by=record.closed_by,
            reason=record.close_reason,
        )
        return await self._write_label_set(record, end)

    # --- annotators ------------------------------------------------------------------------------

    async def next_unlabeled(self, dataset_id: str, annotator: str) -> LabelTask:
        """Reserve the next unlabeled image of the dataset's open version for ``annotator``.

        Raises:
            InvalidInputError: a required field is empty.
            NotFoundError: unknown dataset, or every image is labeled or reserved by others.
        """
        dataset_id = required("dataset_id", dataset_id)
        annotator = required("annotator", annotator)
        now = self._clock()
        until = now + self._reservation
        for record in await self._open_versions(dataset_id):
            image = await self._store.reserve_next(
                dataset_id, record.version, annotator, now=now, until=until
            )
            if image is None:
                # Looking may have repaired labeled flags, and so completed the version.
                await self._settle(record)
                continue
            data = await self._objects.get_verified(Bucket.IMAGES, image.key, sha256=image.sha256)
            remaining = await self._store.unlabeled_count(dataset_id, record.version)
            return LabelTask(image=image, data=data, reserved_until=until, remaining=remaining)
        raise NotFoundError(
            f"nothing to label in dataset {dataset_id!r}: every image of its open versions is "
            "labeled or reserved"
        )

    async def submit_label(
        self,
        dataset_id: str,
        sha256: str,
        label: Label,
        *,
        annotator: str,
        defect_type: str | None = None,
        labeled_at: datetime | None = None,
    ) -> int:
        """Label one image of an open version; return how many are left in the open version.

        Raises:
            InvalidInputError: a required field is empty, the digest is malformed, or a good
                image was given a defect type.
            NotFoundError: unknown dataset, or the image is in none of its open versions.
            FailedPreconditionError: the dataset has no open version.
        """
        dataset_id = required("dataset_id", dataset_id)
        annotator = required("annotator", annotator)
        validate_digest(sha256)
        defect = defect_type_for(label, defect_type)
        versions = await self._require_open(dataset_id)
        if await self._store.find_image(dataset_id, sha256, [r.version for r in versions]) is None:
            raise NotFoundError(f"image {sha256} is in no open version of dataset {dataset_id!r}")
        labeled = ImageLabel(
            sha256=sha256,
            label=label,
            defect_type=defect,
            source="manual",
            annotator=annotator,
            labeled_at=labeled_at or self._clock(),
        )
        await self._store.put_labels(dataset_id, [labeled], replace=True)
        return await self._after_labeling(versions)

    async def import_labels(
        self, dataset_id: str, fmt: LabelFileFormat, content: bytes, *, annotator: str
    ) -> ImportReport:
        """Apply a labeling tool's export to the dataset's open versions, row by row.

        Rows are matched to images by SHA-256 or by name (see :class:`ImageIndex`); a later row
        for the same image wins. Labels get provenance ``file`` and the export's annotator, or
        ``annotator`` when the export names none.

        Raises:
            InvalidInputError: a required field is empty, or the content is not ``fmt`` at all.
            NotFoundError: unknown dataset.
            FailedPreconditionError: the dataset has no open version.
        """
        dataset_id = required("dataset_id", dataset_id)
        annotator = required("annotator", annotator)
        if not content:
            raise InvalidInputError("content is empty")
        parsed = read_labels(fmt, content)
        versions = await self._require_open(dataset_id)
        images = await self._store.images(dataset_id, [r.version for r in versions])
        index = ImageIndex((image.sha256, image.filename) for image in images)
        current = await self._store.labels(dataset_id, {image.sha256 for image in images})
        problems = list(parsed.problems)
        applied = unchanged = unmatched = 0
        updates: dict[str, ImageLabel] = {}
        now = self._clock()
        for row in parsed.rows:
            try:
                sha256 = index.match(row.reference)
            except InvalidInputError as exc:
                problems.append(RowProblem(row.row, row.reference, exc.message))
                continue
            if sha256 is None:
                unmatched += 1
                problems.append(
                    RowProblem(row.row, row.reference, "names no image of an open version")
                )
                continue
            if _agrees(updates.get(sha256) or current.get(sha256), row):
                unchanged += 1
                continue
            applied += 1
            updates[sha256] = ImageLabel(
                sha256=sha256,
                label=row.label,
                defect_type=row.defect_type,
                source="file",
                annotator=row.annotator or annotator,
                labeled_at=now,
            )
        await self._store.put_labels(dataset_id, list(updates.values()), replace=True)
        return ImportReport(
            applied=applied,
            unchanged=unchanged,
            unmatched=unmatched,
            invalid=len(problems) - unmatched,
            problems=sorted(problems, key=lambda p: p.row)[:MAX_PROBLEMS],
            remaining=await self._after_labeling(versions),
        )

    async def close_version(
        self, dataset_id: str, operator: str, reason: str = "", version: int | None = None
    ) -> ClosedVersion:
        """End an open version now (the oldest, unless ``version`` names one): its unlabeled
        images are excluded and counted.

        Naming the version makes a retried call safe: a version that is already labeled or
        closed is answered as it was stored, and nothing else is closed.

        Raises:
            InvalidInputError: a required field is empty.
            NotFoundError: unknown dataset or version.
            FailedPreconditionError: no open version, or it has no labeled image.
        """
        dataset_id = required("dataset_id", dataset_id)
        operator = required("operator", operator)
        if version is None:
            record = (await self._require_open(dataset_id))[0]
        else:
            record = await self._stored(dataset_id, version)
            if record.status is not VersionStatus.OPEN:
                return await self._closed(record, record.ended_at or self._clock())
        excluded = await self._store.unlabeled(dataset_id, record.version)
        if len(excluded) >= record.image_count:
            raise FailedPreconditionError(
                f"version {record.version} of dataset {dataset_id!r} has no labeled image; "
                "label some before closing it"
            )
        now = self._clock()
        end = (
            VersionEnd(
                VersionStatus.CLOSED,
                at=now,
                excluded=tuple(excluded),
                closed_by=operator,
                reason=reason.strip() or None,
            )
            if excluded
            else VersionEnd(VersionStatus.LABELED, at=now)
        )
        # Whoever claimed the end first (this call or a racing one), it is the stored one.
        ended = await self._end(record, end)
        return await self._closed(ended, now)

    async def _closed(self, ended: VersionRecord, now: datetime) -> ClosedVersion:
        versions = await self._store.versions(ended.dataset_id)
        still_open = [later.version for later in _still_open(versions)]
        return ClosedVersion(
            dataset_id=ended.dataset_id,
            closed_version=ended.version,
            # The next version labeling holds open, else the number ingestion gives the next one.
            open_version=still_open[0] if still_open else versions[-1].version + 1,
            labeled_count=ended.image_count - len(ended.excluded),
            excluded_count=len(ended.excluded),
            closed_at=ended.ended_at or now,
        )

    # --- reviews ---------------------------------------------------------------------------------

    async def apply_labels(self, dataset_id: str, labels: Sequence[ImageLabel]) -> None:
        """Label images outside an annotator's task (a reviewer's word): it replaces any other
        label, and may be the last one an open version waited for, so those are settled too."""
        await self._store.put_labels(dataset_id, labels, replace=True)
        # The dataset may have no version holding the images yet: the labels wait for them.
        await self._after_labeling(_still_open(await self._store.versions(dataset_id)))

    # --- internals -------------------------------------------------------------------------------

    async def _record(self, event: DatasetIngested) -> VersionRecord:
        payload = event.payload
        manifest = await self._manifest(payload)
        await self._store.put_labels(
            payload.dataset_id,
            [
                ImageLabel(
                    sha256=image.sha256,
                    label=image.label,
                    defect_type=image.defect_type,
                    source="import",
                    labeled_at=manifest.created_at,
                )
                for image in manifest.images
                if image.label is not None
            ],
            replace=False,
        )
        record = VersionRecord(
            dataset_id=payload.dataset_id,
            version=payload.version,
            manifest_key=payload.manifest_key,
            image_count=len(manifest.images),
            event=event,
            opened_at=self._clock(),
            traceparent=traceparent(),
        )
        await self._store.record_version(
            record,
            [
                VersionImage(
                    dataset_id=payload.dataset_id,
                    version=payload.version,
                    sha256=image.sha256,
                    key=image.key,
                    filename=image.filename,
                )
                for image in manifest.images
            ],
        )
        log.info(
            "recorded %s: %d images, %d labeled by layout",
            record.id,
            record.image_count,
            sum(1 for image in manifest.images if image.label is not None),
        )
        return record

    async def _manifest(self, payload: DatasetIngestedPayload) -> Manifest:
        body = await self._objects.get_verified(Bucket.DATASETS, payload.manifest_key)
        try:
            manifest = Manifest.model_validate_json(body)
        except ValidationError as exc:
            raise InvalidInputError(
                f"{payload.manifest_key} is not a manifest ({exc.error_count()} errors): {exc}"
            ) from None
        if (manifest.dataset_id, manifest.version) != (payload.dataset_id, payload.version):
            raise InvalidInputError(
                f"{payload.manifest_key} describes {manifest.dataset_id} v{manifest.version}, "
                f"not {payload.dataset_id} v{payload.version}"
            )
        return manifest

    async def _settle(self, record: VersionRecord) -> bool:
        """End the version if every image has a label (or finish an end claimed for it), and
        publish what it still owes; True if it stays open."""
        if record.status is VersionStatus.OPEN and record.ending is None:
            if await self._store.unlabeled_count(record.dataset_id, record.version):
                return True
            await self._end(record, VersionEnd(VersionStatus.LABELED, at=self._clock()))
        else:
            await self._finish(record)
        return False

    async def _end(self, record: VersionRecord, end: VersionEnd) -> VersionRecord:
        """Claim ``end`` for an open version and finish it; the version as it ended (the first
        claim's way, when another caller claimed first)."""
        if record.status is VersionStatus.OPEN and record.ending is None:
            await self._store.claim_end(record.dataset_id, record.version, end)
            record = await self._stored(record.dataset_id, record.version)
        return await self._finish(record)

    async def _finish(self, record: VersionRecord) -> VersionRecord:
        """Write the claimed end's LabelSet and end the version with its announcement pending,
        then publish what it owes; the version as stored."""
        if record.status is VersionStatus.OPEN and record.ending is not None:
            announcement = await self._write_label_set(record, record.ending)
            await self._store.end_version(
                record.dataset_id, record.version, record.ending, announcement
            )
            record = await self._stored(record.dataset_id, record.version)
        for pending in record.pending:
            await self._announce(record, pending)
        return record

    async def _write_label_set(self, record: VersionRecord, end: VersionEnd) -> Announcement:
        """Write the version's LabelSet as ``end`` leaves it; the ``dataset.labeled`` naming it.

        Only a claimed end is written, so every writer of ``labels.json`` writes the same end.
        """
        excluded = set(end.excluded)
        kept = sorted(
            image.sha256
            for image in await self._store.images(record.dataset_id, [record.version])
            if image.sha256 not in excluded
        )
        labels = await self._store.labels(record.dataset_id, kept)
        missing = [sha for sha in kept if sha not in labels]
        if missing:
            raise FailedPreconditionError(
                f"{record.id} ended with {len(missing)} images unlabeled (e.g. {missing[0]})"
            )
        label_set = LabelSet(
            dataset_id=record.dataset_id,
            version=record.version,
            labels=[labels[sha] for sha in kept],
            excluded=sorted(excluded),
        )
        key = labels_key(record.dataset_id, record.version)
        body = json.dumps(label_set.model_dump(mode="json"), sort_keys=True).encode()
        await self._objects.put_named(Bucket.DATASETS, key, body, content_type="application/json")
        counts = Counter(label.label.value for label in label_set.labels)
        log.info("%s labeled: %s, %d excluded", record.id, dict(counts), len(label_set.excluded))
        event = DatasetLabeled.caused_by(
            record.event,
            DatasetLabeledPayload(
                dataset_id=record.dataset_id,
                version=record.version,
                labels_key=key,
                label_counts={label.value: counts[label.value] for label in Label},
                excluded_count=len(excluded),
                closed_by=end.closed_by,
            ),
            producer=PRODUCER,
        )
        return Announcement(event, record.traceparent)

    async def _announce(self, record: VersionRecord, announcement: Announcement) -> None:
        """Publish the version's ``dataset.labeled`` at once; if Kafka refuses it, the version
        has ended all the same and the event stays pending in its outbox for the outbox relay
        (no request or delivery is left to announce it again)."""
        await announce_now(
            self._publish,
            announcement,
            lambda: self._store.mark_published(record.dataset_id, record.version, announcement.id),
            subject=record.id,
        )

    async def _after_labeling(self, versions: Sequence[VersionRecord]) -> int:
        """Settle the versions new labels may have completed; the unlabeled left in the oldest."""
        still_open = [record for record in versions if await self._settle(record)]
        if not still_open:
            return 0
        return await self._store.unlabeled_count(still_open[0].dataset_id, still_open[0].version)

    async def _open_versions(self, dataset_id: str) -> list[VersionRecord]:
        """The open versions of a dataset a request names, oldest first (maybe none).

        Raises:
            NotFoundError: no version of the dataset was ever ingested.
        """
        versions = await self._store.versions(dataset_id)
        if not versions:
            raise NotFoundError(f"unknown dataset {dataset_id!r}: no version of it was ingested")
        return _still_open(versions)

    async def _require_open(self, dataset_id: str) -> list[VersionRecord]:
        versions = await self._open_versions(dataset_id)
        if not versions:
            raise FailedPreconditionError(
                f"dataset {dataset_id!r} has no open version: every version is labeled or closed"
            )
        return versions

    async def _stored(self, dataset_id: str, version: int) -> VersionRecord:
        record = await self._store.get_version(dataset_id, version)
        if record is None:
            raise NotFoundError(f"version {version} of dataset {dataset_id!r} is not recorded")
        return record


def _agrees(known: ImageLabel | None, row: LabelRow) -> bool:
    return known is not None and (known.label, known.defect_type) == (row.label, row.defect_type)


def _still_open(versions: Sequence[VersionRecord]) -> list[VersionRecord]:
    return [record for record in versions if record.status is VersionStatus.OPEN]


def required(name: str, value: str) -> str:
    """The field without its padding; a blank one is refused, in the review queue's requests too."""
    cleaned = value.strip()
    if not cleaned:
        raise InvalidInputError(f"{name} is required")
    return cleaned
