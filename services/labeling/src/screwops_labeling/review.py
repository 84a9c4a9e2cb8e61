"""The review queue: inspections a person should look at, and what reviewers decide.

The queue is fed by ``inspection.completed``: an inspection whose score lies near its
threshold, whose verdict contradicts a label labeling already holds for the same image, or that
falls in a small deterministic sample is queued (if the gateway kept its image). A reviewer's
outcome is kept on the queue item as that inspection's ground truth and becomes the image's label
in the review dataset, so the image arrives labeled if it is later ingested there.

When the monitor asks for retraining (``training.requested``), the reviewed images of the
degraded version's inspections that the requested dataset has not had yet become its next
version: labeled in it by their reviews, dropped into the drop bucket and closed with ``_READY``
(:meth:`ReviewQueue.on_training_requested`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from screwops_bus import Announcement, Publish, announce_now
from screwops_contracts import (
    InspectionCompleted,
    InspectionReviewed,
    InspectionReviewedPayload,
    TrainingRequested,
)
from screwops_contracts.datasets import READY_MARKER, Bucket, ImageLabel, Label
from screwops_errors import IntegrityError, InvalidInputError, NotFoundError
from screwops_storage import join_key
from screwops_telemetry import traceparent

from screwops_labeling.config import ReviewPolicy
from screwops_labeling.label_files import defect_type_for, digest_named_by
from screwops_labeling.store import LabelingStore
from screwops_labeling.store.review import ReviewCursor, ReviewItem, ReviewOutcome
from screwops_labeling.versions import PRODUCER, Objects, VersionLabeling, required

log = logging.getLogger("screwops.labeling")

DEFAULT_PAGE = 50
MAX_PAGE = 200

_SAMPLE_SCALE = 1_000_000


@dataclass(frozen=True)
class ReviewPage:
    """A page of the review queue; ``images`` by inspection id when they were asked for."""

    items: list[ReviewItem]
    images: dict[str, bytes]
    next_token: str
    total: int


@dataclass(frozen=True)
class ReviewResult:
    """The outcome of one review, and how many items still wait."""

    verdict_correct: bool
    remaining: int


class ReviewQueue:
    """Queues inspections for review and hands the reviewed ones on (see the module docstring).

    The store is the whole of labeling's: what labeling already holds for an image decides
    whether an inspection of it is disputed.
    """

    def __init__(
        self,
        store: LabelingStore,
        objects: Objects,
        publish: Publish,
        versions: VersionLabeling,
        *,
        policy: ReviewPolicy,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._objects = objects
        self._publish = publish
        self._versions = versions
        self._policy = policy
        self._clock = clock

    async def expire(self) -> int:
        """Delete the items older than the policy's retention, so the queue (and the review
        collection) stays bounded when nobody reviews; how many went."""
        if self._policy.retention is None:
            return 0
        expired = await self._store.expire_reviews(self._clock() - self._policy.retention)
        if expired:
            log.info(
                "%d inspections older than %s left the review queue",
                expired,
                self._policy.retention,
            )
        return expired

    # --- events ----------------------------------------------------------------------------------

    async def on_inspection_completed(self, event: InspectionCompleted) -> None:
        """Queue the inspection for review when its verdict is uncertain, disputed or sampled.

        Only inspections whose image the gateway kept can be reviewed; the others are skipped.
        """
        payload = event.payload
        if payload.image_key is None:
            return
        sha256 = digest_named_by(payload.image_key)
        reason = await self._review_reason(event, sha256)
        if reason is None:
            return
        await self._store.enqueue_review(
            ReviewItem(
                inspection_id=str(event.event_id),
                image_sha256=sha256,
                object_key=payload.image_key,
                line_id=payload.line_id,
                camera_id=payload.camera_id,
                verdict=payload.verdict,
                defect_probability=payload.defect_probability,
                threshold=payload.threshold,
                model_name=payload.model_name,
                model_version=payload.model_version,
                inspected_at=event.occurred_at,
                queue_reason=reason,
                queued_at=self._clock(),
            )
        )

    # --- reviewers -------------------------------------------------------------------------------

    async def page(
        self, line_id: str, *, include_images: bool, page_size: int, page_token: str
    ) -> ReviewPage:
        """A page of the inspections waiting for review, oldest first.

        Raises:
            InvalidInputError: a negative page size, or a page token this server did not give.
        """
        if page_size < 0:
            raise InvalidInputError("page_size must not be negative")
        limit = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        line = line_id.strip() or None
        after = _decode_cursor(page_token) if page_token else None
        items = await self._store.pending_reviews(line, after, limit + 1)
        page, more = items[:limit], len(items) > limit
        images = (
            {
                item.inspection_id: await self._objects.get_verified(
                    Bucket.INSPECTIONS, item.object_key, sha256=item.image_sha256
                )
                for item in page
            }
            if include_images
            else {}
        )
        return ReviewPage(
            items=page,
            images=images,
            next_token=_encode_cursor(page[-1]) if more else "",
            total=await self._store.pending_review_count(line),
        )

    async def submit_review(
        self,
        inspection_id: str,
        label: Label,
        *,
        reviewer: str,
        defect_type: str | None = None,
        reviewed_at: datetime | None = None,
    ) -> ReviewResult:
        """Record a reviewer's ground truth for an inspection; it leaves the queue.

        A later review of the same inspection replaces the earlier outcome.

        Raises:
            InvalidInputError: a required field is empty, or a good image was given a defect type.
            NotFoundError: the inspection was never queued.
        """
        inspection_id = required("inspection_id", inspection_id)
        reviewer = required("reviewer", reviewer)
        defect = defect_type_for(label, defect_type)
        item = await self._store.get_review(inspection_id)
        if item is None:
            raise NotFoundError(f"inspection {inspection_id!r} is not in the review queue")
        outcome = ReviewOutcome(
            label=label,
            defect_type=defect,
            reviewer=reviewer,
            reviewed_at=reviewed_at or self._clock(),
            verdict_correct=(item.verdict == "DEFECT") == (label is Label.BAD),
        )
        # The monitor's ground truth. The id is derived from the decision, so a retried call
        # publishes the same event and the monitor counts it once.
        announcement = Announcement(
            InspectionReviewed.origin(
                InspectionReviewedPayload(
                    inspection_id=inspection_id,
                    line_id=item.line_id,
                    model_name=item.model_name,
                    model_version=item.model_version,
                    verdict=item.verdict,
                    defect_probability=item.defect_probability,
                    label="bad" if label is Label.BAD else "good",
                    defect_type=defect,
                    verdict_correct=outcome.verdict_correct,
                    reviewer=reviewer,
                    reviewed_at=outcome.reviewed_at,
                ),
                producer=PRODUCER,
                key=f"{inspection_id}/{label}/{defect}/{reviewer}",
            ),
            traceparent(),
        )
        await self._store.record_review(inspection_id, outcome, announcement)
        await self._announce(inspection_id, announcement)
        if item.image_sha256 is not None:
            # The review dataset, and every dataset the image was already handed to.
            for dataset_id in dict.fromkeys((self._policy.dataset_id, *item.contributed_to)):
                await self._label_by_review(dataset_id, [(item.image_sha256, outcome)])
        return ReviewResult(
            verdict_correct=outcome.verdict_correct,
            remaining=await self._store.pending_review_count(None),
        )

    # --- retraining ------------------------------------------------------------------------------

    async def on_training_requested(self, event: TrainingRequested) -> None:
        """Hand the reviewed inspections the dataset has not had yet to ingestion, so the
        retraining asked for learns from what production showed the reviewers: those the
        degraded version answered, or every one of the model's when an operator asks.

        A model trained again on the same data would come out the same (the trainer reuses the
        run): what a drift needs is the drifted images, labeled. Each reviewed image is dropped
        as ``<dataset>/<good|bad>/<sha256>`` into the drop bucket (one at a time, so memory does
        not grow with the batch), the reviewers' labels are recorded for the dataset (so the
        images arrive labeled with their defect types and the review as provenance), and
        ``<dataset>/_READY`` closes the batch: ingestion cuts a new version and it goes through
        validation to the trainer like any other. The items are marked handed over last, so a
        crash before that hands them over again: the same keys and bytes, which ingestion finds
        already in the dataset.
        """
        request = event.payload
        dataset_id = request.dataset_id
        reviewed = await self._store.reviewed_outside(
            dataset_id, model_name=request.model_name, model_version=request.degraded_version
        )
        handed_ids: list[str] = []
        reviews: list[tuple[str, ReviewOutcome]] = []
        for item in reviewed:
            if item.outcome is None or item.image_sha256 is None:
                continue
            try:
                data = await self._objects.get_verified(
                    Bucket.INSPECTIONS, item.object_key, sha256=item.image_sha256
                )
            except (NotFoundError, IntegrityError) as unusable:
                log.error(
                    "inspection %s is not handed to %s: its image %s/%s is unusable: %s",
                    item.inspection_id,
                    dataset_id,
                    Bucket.INSPECTIONS,
                    item.object_key,
                    unusable.message,
                )
                continue
            key = join_key(dataset_id, f"{item.outcome.label.value}/{item.image_sha256}")
            await self._objects.put_named(Bucket.DROP, key, data)
            handed_ids.append(item.inspection_id)
            reviews.append((item.image_sha256, item.outcome))
        if not handed_ids:
            log.info("retraining %s asked for: no reviewed inspection to add to it", dataset_id)
            return
        await self._label_by_review(dataset_id, reviews)
        await self._objects.put_named(Bucket.DROP, join_key(dataset_id, READY_MARKER), b"")
        await self._store.mark_contributed(dataset_id, handed_ids)
        log.info(
            "handed %d reviewed inspections to %s for the retraining %s asked for: %s",
            len(handed_ids),
            dataset_id,
            request.requested_by,
            dict(Counter(outcome.label.value for _, outcome in reviews)),
        )

    # --- internals -------------------------------------------------------------------------------

    async def _announce(self, inspection_id: str, announcement: Announcement) -> None:
        """Publish the review's event at once; if Kafka refuses it, the review is recorded all
        the same and the event stays pending in its item's outbox for the outbox relay."""
        await announce_now(
            self._publish,
            announcement,
            lambda: self._store.mark_review_published(inspection_id, announcement.id),
            subject=inspection_id,
        )

    async def _label_by_review(
        self, dataset_id: str, reviewed: Sequence[tuple[str, ReviewOutcome]]
    ) -> None:
        """The reviewers' labels become the dataset's (a person's word replaces any other)."""
        await self._versions.apply_labels(
            dataset_id,
            [
                ImageLabel(
                    sha256=sha256,
                    label=outcome.label,
                    defect_type=outcome.defect_type,
                    source="review",
                    annotator=outcome.reviewer,
                    labeled_at=outcome.reviewed_at,
                )
                for sha256, outcome in reviewed
            ],
        )

    async def _review_reason(self, event: InspectionCompleted, sha256: str | None) -> str | None:
        """Why the inspection of image ``sha256`` needs a person's eyes, or None."""
        payload = event.payload
        if abs(payload.defect_probability - payload.threshold) < self._policy.band:
            return (
                f"near threshold: defect probability {payload.defect_probability:.3f}, "
                f"threshold {payload.threshold:.3f}"
            )
        if sha256 is not None:
            known = await self._store.labels_of_image(sha256)
            for dataset_id, label in sorted(known.items()):
                if (label.label is Label.BAD) != (payload.verdict == "DEFECT"):
                    return (
                        f"disputed: verdict {payload.verdict} but the image is labeled "
                        f"{label.label.value} in dataset {dataset_id!r}"
                    )
        if _sampled(event.event_id, self._policy.sample_rate):
            return "random sample"
        return None


def _sampled(event_id: uuid.UUID, rate: float) -> bool:
    """A sample decided by the event id, so a redelivered event is sampled the same way."""
    return event_id.int % _SAMPLE_SCALE < rate * _SAMPLE_SCALE


def _encode_cursor(item: ReviewItem) -> str:
    raw = json.dumps({"at": item.inspected_at.isoformat(), "id": item.inspection_id})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(token: str) -> ReviewCursor:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
        return ReviewCursor(datetime.fromisoformat(raw["at"]), str(raw["id"]))
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidInputError(f"page_token {token!r} was not given out by this server") from None
