"""Labeling's metadata in MongoDB: versions to label, their images, labels, reservations, reviews.

Labeling owns these collections; no other service reads them. Those of a version being labeled
are described in :mod:`screwops_labeling.store.versions`, the review queue's in
:mod:`screwops_labeling.store.review`.

Every write is an upsert keyed by what it describes, so repeating it changes nothing. Readers
take optional fields with ``get``: FerretDB v1 drops null and empty-array fields written with
``$setOnInsert``.
"""

from __future__ import annotations

from typing import Protocol

from screwops_storage import ensure_indexes

from screwops_labeling.store.review import INDEXES as REVIEW_INDEXES
from screwops_labeling.store.review import (
    REVIEWS,
    MongoReviewStore,
    ReviewCursor,
    ReviewItem,
    ReviewOutcome,
    ReviewStore,
)
from screwops_labeling.store.versions import INDEXES as VERSION_INDEXES
from screwops_labeling.store.versions import (
    VERSIONS,
    MongoVersionStore,
    VersionEnd,
    VersionImage,
    VersionRecord,
    VersionStatus,
    VersionStore,
)

INDEXES = VERSION_INDEXES + REVIEW_INDEXES
OUTBOXES = (VERSIONS, REVIEWS)
"""The collections whose documents hold announcements (see :mod:`screwops_bus.outbox`)."""


class LabelingStore(VersionStore, ReviewStore, Protocol):
    """What the labeling service needs from its database."""

    async def ensure_indexes(self) -> None:
        """Create labeling's indexes (see :data:`INDEXES`)."""


class MongoLabelingStore(MongoVersionStore, MongoReviewStore):
    """:class:`LabelingStore` on motor; works on FerretDB v1 and MongoDB alike."""

    async def ensure_indexes(self) -> None:
        await ensure_indexes(self._db, INDEXES)


__all__ = [
    "INDEXES",
    "OUTBOXES",
    "REVIEWS",
    "VERSIONS",
    "LabelingStore",
    "MongoLabelingStore",
    "ReviewCursor",
    "ReviewItem",
    "ReviewOutcome",
    "VersionEnd",
    "VersionImage",
    "VersionRecord",
    "VersionStatus",
]
