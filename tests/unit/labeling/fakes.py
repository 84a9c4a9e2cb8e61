"""In-memory stand-ins for labeling's store and clock, the service wired to them, and builders for
its inputs."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from screwops_bus import Announcement, Pending, Publish
from screwops_contracts import (
    DatasetIngested,
    DatasetIngestedPayload,
    InspectionCompleted,
    InspectionCompletedPayload,
    TrainingRequested,
    TrainingRequestedPayload,
)
from screwops_contracts.datasets import Bucket, ImageLabel, Label, Manifest, ManifestImage
from screwops_labeling.config import ReviewPolicy, Rules
from screwops_labeling.service import LabelingService
from screwops_labeling.store import (
    REVIEWS,
    VERSIONS,
    ReviewCursor,
    ReviewItem,
    ReviewOutcome,
    VersionEnd,
    VersionImage,
    VersionRecord,
    VersionStatus,
)

from tests.fakes import FakeObjects, RecordingBus

START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


class FakeStore:
    """:class:`screwops_labeling.store.LabelingStore` in dictionaries, same contract, and the
    outbox its versions and reviews keep (:class:`screwops_bus.Outbox`)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], VersionRecord] = {}
        self.version_images: dict[tuple[str, int], dict[str, VersionImage]] = {}
        self.label_docs: dict[tuple[str, str], ImageLabel] = {}
        self.reservations: dict[tuple[str, str], tuple[str, datetime]] = {}
        self.reviews: dict[str, ReviewItem] = {}
        self.unannounced: set[tuple[str, int]] = set()
        """Versions written before the outbox, whose ``published`` flag was still false."""

    async def ensure_indexes(self) -> None:
        return None

    async def record_version(self, record: VersionRecord, images: Sequence[VersionImage]) -> None:
        known = self.version_images.setdefault((record.dataset_id, record.version), {})
        for image in images:
            known.setdefault(image.sha256, image)
        self.records.setdefault((record.dataset_id, record.version), record)

    async def versions(self, dataset_id: str) -> list[VersionRecord]:
        return sorted(
            (r for (d, _), r in self.records.items() if d == dataset_id), key=lambda r: r.version
        )

    async def get_version(self, dataset_id: str, version: int) -> VersionRecord | None:
        return self.records.get((dataset_id, version))

    async def open_versions(self) -> list[VersionRecord]:
        return [r for _, r in sorted(self.records.items()) if r.status is VersionStatus.OPEN]

    async def claim_end(self, dataset_id: str, version: int, end: VersionEnd) -> None:
        record = self.records[(dataset_id, version)]
        if record.status is VersionStatus.OPEN and record.ending is None:
            self.records[(dataset_id, version)] = replace(record, ending=end)

    async def end_version(
        self, dataset_id: str, version: int, end: VersionEnd, announcement: Announcement
    ) -> None:
        record = self.records[(dataset_id, version)]
        if record.status is not VersionStatus.OPEN:
            return
        self.records[(dataset_id, version)] = replace(
            record,
            status=end.status,
            ended_at=end.at,
            excluded=end.excluded,
            closed_by=end.closed_by,
            close_reason=end.reason,
            ending=None,
            pending=(announcement,),
        )

    async def mark_published(self, dataset_id: str, version: int, announcement_id: str) -> None:
        record = self.records[(dataset_id, version)]
        pending = tuple(a for a in record.pending if a.id != announcement_id)
        self.records[(dataset_id, version)] = replace(record, pending=pending)

    async def adopt_unannounced(
        self, announcement_of: Callable[[VersionRecord], Awaitable[Announcement | None]]
    ) -> int:
        adopted = 0
        for key in sorted(self.unannounced):
            self.unannounced.discard(key)
            record = self.records[key]
            if (announcement := await announcement_of(record)) is not None:
                self.records[key] = replace(record, pending=(*record.pending, announcement))
                adopted += 1
        return adopted

    async def images(self, dataset_id: str, versions: Iterable[int]) -> list[VersionImage]:
        return [
            image
            for version in sorted(versions)
            for _, image in sorted(self.version_images.get((dataset_id, version), {}).items())
        ]

    async def find_image(
        self, dataset_id: str, sha256: str, versions: Iterable[int]
    ) -> VersionImage | None:
        for version in sorted(versions):
            image = self.version_images.get((dataset_id, version), {}).get(sha256)
            if image is not None:
                return image
        return None

    async def unlabeled_count(self, dataset_id: str, version: int) -> int:
        return len(await self.unlabeled(dataset_id, version))

    async def unlabeled(self, dataset_id: str, version: int) -> list[str]:
        return sorted(
            sha
            for sha in self.version_images.get((dataset_id, version), {})
            if (dataset_id, sha) not in self.label_docs
        )

    async def reserve_next(
        self, dataset_id: str, version: int, annotator: str, *, now: datetime, until: datetime
    ) -> VersionImage | None:
        unlabeled = await self.unlabeled(dataset_id, version)

        def held_by(sha: str) -> str | None:
            holder = self.reservations.get((dataset_id, sha))
            return holder[0] if holder and holder[1] > now else None

        ordered = [s for s in unlabeled if held_by(s) == annotator] + [
            s for s in unlabeled if held_by(s) is None
        ]
        if not ordered:
            return None
        self.reservations[(dataset_id, ordered[0])] = (annotator, until)
        return self.version_images[(dataset_id, version)][ordered[0]]

    async def labels(self, dataset_id: str, shas: Iterable[str]) -> dict[str, ImageLabel]:
        return {
            s: self.label_docs[(dataset_id, s)] for s in shas if (dataset_id, s) in self.label_docs
        }

    async def labels_of_image(self, sha256: str) -> dict[str, ImageLabel]:
        return {d: label for (d, s), label in self.label_docs.items() if s == sha256}

    async def put_labels(
        self, dataset_id: str, labels: Sequence[ImageLabel], *, replace: bool
    ) -> None:
        for label in labels:
            key = (dataset_id, label.sha256)
            if replace or key not in self.label_docs:
                self.label_docs[key] = label
            self.reservations.pop(key, None)

    async def enqueue_review(self, item: ReviewItem) -> None:
        self.reviews.setdefault(item.inspection_id, item)

    async def get_review(self, inspection_id: str) -> ReviewItem | None:
        return self.reviews.get(inspection_id)

    async def record_review(
        self, inspection_id: str, outcome: ReviewOutcome, announcement: Announcement
    ) -> None:
        item = self.reviews[inspection_id]
        pending = (*item.pending, announcement)
        self.reviews[inspection_id] = replace(item, outcome=outcome, pending=pending)

    async def mark_review_published(self, inspection_id: str, announcement_id: str) -> None:
        item = self.reviews[inspection_id]
        pending = tuple(a for a in item.pending if a.id != announcement_id)
        self.reviews[inspection_id] = replace(item, pending=pending)

    async def pending(self) -> list[Pending]:
        return [
            Pending(VERSIONS, r.id, a) for _, r in sorted(self.records.items()) for a in r.pending
        ] + [Pending(REVIEWS, i.inspection_id, a) for i in self.reviews.values() for a in i.pending]

    async def sent(self, pending: Pending) -> None:
        if pending.collection == REVIEWS:
            await self.mark_review_published(pending.document_id, pending.announcement.id)
            return
        [record] = [r for r in self.records.values() if r.id == pending.document_id]
        await self.mark_published(record.dataset_id, record.version, pending.announcement.id)

    async def pending_reviews(
        self, line_id: str | None, after: ReviewCursor | None, limit: int
    ) -> list[ReviewItem]:
        pending = sorted(
            (
                i
                for i in self.reviews.values()
                if i.outcome is None and line_id in (None, i.line_id)
            ),
            key=lambda i: (i.inspected_at, i.inspection_id),
        )
        if after is not None:
            pending = [
                i
                for i in pending
                if (i.inspected_at, i.inspection_id) > (after.inspected_at, after.inspection_id)
            ]
        return pending[:limit]

    async def pending_review_count(self, line_id: str | None) -> int:
        return len(await self.pending_reviews(line_id, None, len(self.reviews)))

    async def reviewed_outside(
        self, dataset_id: str, *, model_name: str, model_version: int | None
    ) -> list[ReviewItem]:
        return sorted(
            (
                i
                for i in self.reviews.values()
                if i.outcome is not None
                and dataset_id not in i.contributed_to
                and i.model_name == model_name
                and model_version in (None, i.model_version)
            ),
            key=lambda i: (i.inspected_at, i.inspection_id),
        )

    async def mark_contributed(self, dataset_id: str, inspection_ids: Sequence[str]) -> None:
        for inspection_id in inspection_ids:
            item = self.reviews[inspection_id]
            if dataset_id not in item.contributed_to:
                contributed = (*item.contributed_to, dataset_id)
                self.reviews[inspection_id] = replace(item, contributed_to=contributed)

    async def expire_reviews(self, before: datetime) -> int:
        expired = [
            i.inspection_id
            for i in self.reviews.values()
            if i.inspected_at < before and not i.pending
        ]
        for inspection_id in expired:
            del self.reviews[inspection_id]
        return len(expired)


class Clock:
    """A clock the test moves by hand (reservations expire, labels get times)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Harness:
    """The service wired to fakes, and the fakes to look into."""

    service: LabelingService
    store: FakeStore
    objects: FakeObjects
    emitted: RecordingBus
    clock: Clock

    def keep_inspection_image(self, data: bytes) -> tuple[str, str]:
        """Put ``data`` where the gateway keeps an inspection's image: its key and digest."""
        sha = hashlib.sha256(data).hexdigest()
        key = f"inspections/{sha[:2]}/{sha}"
        self.objects.objects[(Bucket.INSPECTIONS, key)] = data
        return key, sha

    def ingest(
        self,
        dataset_id: str,
        version: int,
        images: list[tuple[str, Label | None]],
        *,
        carried: Sequence[ManifestImage] = (),
    ) -> tuple[DatasetIngested, list[ManifestImage]]:
        """Store images and a manifest for them in the fake MinIO; the event announcing it."""
        entries = list(carried)
        for filename, label in images:
            data = f"{dataset_id}/{filename}".encode()
            sha = hashlib.sha256(data).hexdigest()
            key = f"raw/{sha[:2]}/{sha}"
            self.objects.objects[(Bucket.IMAGES, key)] = data
            entries.append(
                ManifestImage(
                    sha256=sha,
                    key=key,
                    filename=filename,
                    width=64,
                    height=64,
                    format="PNG",
                    label=label,
                    defect_type="scratch_head" if label is Label.BAD else None,
                )
            )
        entries.sort(key=lambda image: image.sha256)
        manifest = Manifest(
            dataset_id=dataset_id, version=version, created_at=self.clock.now, images=entries
        )
        manifest_key = f"{dataset_id}/v{version}/manifest.json"
        self.objects.objects[(Bucket.DATASETS, manifest_key)] = manifest.model_dump_json().encode()
        event = DatasetIngested.origin(
            DatasetIngestedPayload(
                dataset_id=dataset_id,
                version=version,
                manifest_key=manifest_key,
                image_count=len(entries),
                labeled_by_layout=sum(1 for image in entries if image.label is not None),
                refused_count=0,
                duplicate_count=0,
                source="import",
            ),
            producer="ingestion",
        )
        return event, entries


def harness(
    *,
    band: float = 0.15,
    sample_rate: float = 0.0,
    publish: Publish | None = None,
    retention: timedelta | None = None,
) -> Harness:
    """The service on fakes; it publishes into ``emitted`` unless given another ``publish`` (a
    bus)."""
    store, objects, emitted, clock = FakeStore(), FakeObjects(), RecordingBus("labeling"), Clock()
    service = LabelingService(
        store,
        objects,
        publish or emitted.publish,
        rules=Rules(
            reservation=timedelta(minutes=10),
            review=ReviewPolicy(
                band=band, sample_rate=sample_rate, dataset_id="screws", retention=retention
            ),
        ),
        clock=clock,
    )
    return Harness(service, store, objects, emitted, clock)


def inspection(
    *,
    verdict: Literal["GOOD", "DEFECT"] = "GOOD",
    probability: float = 0.05,
    threshold: float = 0.5,
    image_key: str | None = "inspections/ab/" + "ab" * 32,
    line_id: str = "line-2",
    model_version: int = 4,
) -> InspectionCompleted:
    return InspectionCompleted.origin(
        InspectionCompletedPayload(
            request_id="req-1",
            line_id=line_id,
            camera_id="cam-4",
            verdict=verdict,
            defect_probability=probability,
            threshold=threshold,
            model_name="screw-classifier",
            model_version=model_version,
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            image_key=image_key,
            latency_ms=6.4,
        ),
        producer="gateway",
    )


def training_requested(dataset_id: str, *, degraded_version: int | None = 4) -> TrainingRequested:
    return TrainingRequested.origin(
        TrainingRequestedPayload(
            model_name="screw-classifier",
            dataset_id=dataset_id,
            degraded_version=degraded_version,
            reason="score_drift 1.2 past 0.9 over 100 observations",
            requested_by="monitor",
        ),
        producer="monitor",
    )
