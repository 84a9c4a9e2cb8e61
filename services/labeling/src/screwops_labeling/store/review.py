"""Labeling's review queue in MongoDB.

- ``review_queue``: inspections queued for review (keyed by inspection id), their outcomes, and
  the datasets each reviewed image was handed to for retraining (``contributed_to``). The update
  that records an outcome also leaves its ``inspection.reviewed`` pending in the item's
  ``outbox`` (:mod:`screwops_bus.outbox`), for the service's outbox relay should the publish that
  follows fail. Items older than ``review_retention_days`` (counted from the inspection) are
  deleted, unless their announcement is still pending, so the collection stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ASCENDING
from screwops_bus import OUTBOX, PENDING, Announcement, mark_sent, pending_in, pending_index
from screwops_contracts.datasets import Label
from screwops_storage import Document, IndexSpec, mongo_errors

REVIEWS = "review_queue"

INDEXES = (
    IndexSpec(REVIEWS, (("status", 1), ("inspected_at", 1))),
    IndexSpec(REVIEWS, (("status", 1), ("line_id", 1), ("inspected_at", 1))),
    pending_index(REVIEWS),
)


class ReviewStatus(StrEnum):
    """Whether a queued inspection still waits for a reviewer."""

    PENDING = "pending"
    REVIEWED = "reviewed"


@dataclass(frozen=True)
class ReviewOutcome:
    """What a reviewer decided about an inspection: its ground truth."""

    label: Label
    defect_type: str | None
    reviewer: str
    reviewed_at: datetime
    verdict_correct: bool


@dataclass(frozen=True)
class ReviewItem:
    """An inspection queued for review, and its outcome once reviewed."""

    inspection_id: str
    image_sha256: str | None
    object_key: str
    line_id: str
    camera_id: str
    verdict: Literal["GOOD", "DEFECT"]
    defect_probability: float
    threshold: float
    model_name: str
    model_version: int
    inspected_at: datetime
    queue_reason: str
    queued_at: datetime
    outcome: ReviewOutcome | None = None
    contributed_to: tuple[str, ...] = ()
    """Datasets the reviewed image was handed to for retraining."""
    pending: tuple[Announcement, ...] = ()
    """Its ``inspection.reviewed`` events from their review until Kafka acknowledged them."""


@dataclass(frozen=True)
class ReviewCursor:
    """Where a page of the review queue ended (the queue is ordered by these two)."""

    inspected_at: datetime
    inspection_id: str


class ReviewStore(Protocol):
    """What the review queue needs from the database."""

    async def enqueue_review(self, item: ReviewItem) -> None:
        """Queue an inspection for review; queuing it again changes nothing."""

    async def get_review(self, inspection_id: str) -> ReviewItem | None:
        """One queued inspection, reviewed or not, or None."""

    async def record_review(
        self, inspection_id: str, outcome: ReviewOutcome, announcement: Announcement
    ) -> None:
        """Store a review outcome, with ``announcement`` pending in the item's outbox, in one
        update; the item leaves the pending queue."""

    async def mark_review_published(self, inspection_id: str, announcement_id: str) -> None:
        """Remove the announcement from the item's outbox: Kafka acknowledged it."""

    async def pending_reviews(
        self, line_id: str | None, after: ReviewCursor | None, limit: int
    ) -> list[ReviewItem]:
        """Pending items, oldest inspection first, after ``after`` (exclusive)."""

    async def pending_review_count(self, line_id: str | None) -> int:
        """How many items wait for review (on one line, or on all)."""

    async def reviewed_outside(
        self, dataset_id: str, *, model_name: str, model_version: int | None
    ) -> list[ReviewItem]:
        """Reviewed items of the model's inspections (answered by ``model_version``, unless
        None) not yet handed to ``dataset_id``, oldest inspection first."""

    async def mark_contributed(self, dataset_id: str, inspection_ids: Sequence[str]) -> None:
        """Remember that these items' images were handed to ``dataset_id``."""

    async def expire_reviews(self, before: datetime) -> int:
        """Delete the items inspected before ``before``, reviewed or not, except those whose
        ``inspection.reviewed`` Kafka has not acknowledged yet; how many were deleted."""


class MongoReviewStore:
    """:class:`ReviewStore` on motor; works on FerretDB v1 and MongoDB alike."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self._db = db

    async def enqueue_review(self, item: ReviewItem) -> None:
        with mongo_errors():
            await self._db[REVIEWS].update_one(
                {"_id": item.inspection_id},
                {"$setOnInsert": _review_document(item)},
                upsert=True,
            )

    async def get_review(self, inspection_id: str) -> ReviewItem | None:
        with mongo_errors():
            doc = await self._db[REVIEWS].find_one({"_id": inspection_id})
        return _review(doc) if doc else None

    async def record_review(
        self, inspection_id: str, outcome: ReviewOutcome, announcement: Announcement
    ) -> None:
        with mongo_errors():
            await self._db[REVIEWS].update_one(
                {"_id": inspection_id},
                {
                    "$set": {
                        "status": ReviewStatus.REVIEWED.value,
                        "outcome": _outcome_document(outcome),
                        PENDING: True,
                    },
                    "$push": {OUTBOX: announcement.document()},
                },
            )

    async def mark_review_published(self, inspection_id: str, announcement_id: str) -> None:
        await mark_sent(self._db[REVIEWS], inspection_id, announcement_id)

    async def pending_reviews(
        self, line_id: str | None, after: ReviewCursor | None, limit: int
    ) -> list[ReviewItem]:
        query = _pending(line_id)
        if after is not None:
            query["$or"] = [
                {"inspected_at": {"$gt": after.inspected_at}},
                {"inspected_at": after.inspected_at, "_id": {"$gt": after.inspection_id}},
            ]
        return await self._reviews_in_order(query, limit)

    async def pending_review_count(self, line_id: str | None) -> int:
        with mongo_errors():
            return await self._db[REVIEWS].count_documents(_pending(line_id))

    async def reviewed_outside(
        self, dataset_id: str, *, model_name: str, model_version: int | None
    ) -> list[ReviewItem]:
        query: Document = {
            "status": ReviewStatus.REVIEWED.value,
            "model_name": model_name,
            "contributed_to": {"$ne": dataset_id},
        }
        if model_version is not None:
            query["model_version"] = model_version
        return await self._reviews_in_order(query, None)

    async def mark_contributed(self, dataset_id: str, inspection_ids: Sequence[str]) -> None:
        with mongo_errors():
            await self._db[REVIEWS].update_many(
                {"_id": {"$in": list(inspection_ids)}},
                {"$addToSet": {"contributed_to": dataset_id}},
            )

    async def expire_reviews(self, before: datetime) -> int:
        with mongo_errors():
            result = await self._db[REVIEWS].delete_many(
                {"inspected_at": {"$lt": before}, OUTBOX: {"$exists": False}}
            )
        return int(result.deleted_count)

    async def _reviews_in_order(self, query: Document, limit: int | None) -> list[ReviewItem]:
        """Review items matching ``query``, oldest inspection first (the id breaks ties, so a
        cursor over them is stable); at most ``limit`` of them, or all for None."""
        cursor = (
            self._db[REVIEWS].find(query).sort([("inspected_at", ASCENDING), ("_id", ASCENDING)])
        )
        if limit is not None:
            cursor = cursor.limit(limit)
        with mongo_errors():
            docs = await cursor.to_list(limit)
        return [_review(doc) for doc in docs]


def _pending(line_id: str | None) -> Document:
    query: Document = {"status": ReviewStatus.PENDING.value}
    if line_id:
        query["line_id"] = line_id
    return query


def _outcome_document(outcome: ReviewOutcome) -> Document:
    return {
        "label": outcome.label.value,
        "defect_type": outcome.defect_type,
        "reviewer": outcome.reviewer,
        "reviewed_at": outcome.reviewed_at,
        "verdict_correct": outcome.verdict_correct,
    }


def _review_document(item: ReviewItem) -> Document:
    return {
        "status": ReviewStatus.PENDING.value,
        "image_sha256": item.image_sha256,
        "object_key": item.object_key,
        "line_id": item.line_id,
        "camera_id": item.camera_id,
        "verdict": item.verdict,
        "defect_probability": item.defect_probability,
        "threshold": item.threshold,
        "model_name": item.model_name,
        "model_version": item.model_version,
        "inspected_at": item.inspected_at,
        "queue_reason": item.queue_reason,
        "queued_at": item.queued_at,
        "outcome": None,
        "contributed_to": [],
    }


def _review(doc: Document) -> ReviewItem:
    outcome = doc.get("outcome")
    return ReviewItem(
        inspection_id=doc["_id"],
        image_sha256=doc.get("image_sha256"),
        object_key=doc["object_key"],
        line_id=doc["line_id"],
        camera_id=doc["camera_id"],
        verdict=doc["verdict"],
        defect_probability=doc["defect_probability"],
        threshold=doc["threshold"],
        model_name=doc["model_name"],
        model_version=doc["model_version"],
        inspected_at=doc["inspected_at"],
        queue_reason=doc["queue_reason"],
        queued_at=doc["queued_at"],
        outcome=None
        if outcome is None
        else ReviewOutcome(
            label=Label(outcome["label"]),
            defect_type=outcome.get("defect_type"),
            reviewer=outcome["reviewer"],
            reviewed_at=outcome["reviewed_at"],
            verdict_correct=outcome["verdict_correct"],
        ),
        contributed_to=tuple(doc.get("contributed_to", ())),
        pending=pending_in(doc),
    )
