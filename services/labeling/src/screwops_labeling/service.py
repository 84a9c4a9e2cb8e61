"""Labeling's domain logic, behind one facade the API and the handlers call.

Labeling does two things: it labels dataset versions, every image of a version getting a label
before ``dataset.labeled`` announces it (:mod:`screwops_labeling.versions`), and it keeps the
review queue, where people judge the gateway's inspections and the images they reviewed are
handed on for retraining (:mod:`screwops_labeling.review`). A review's outcome is also a label:
the queue labels through the versions' labeling, so a review can complete a version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from screwops_bus import Publish
from screwops_contracts import DatasetIngested, InspectionCompleted, TrainingRequested
from screwops_contracts.datasets import Label
from screwops_errors import TransientError

from screwops_labeling.config import Rules
from screwops_labeling.label_files import LabelFileFormat
from screwops_labeling.review import ReviewPage, ReviewQueue, ReviewResult
from screwops_labeling.store import LabelingStore
from screwops_labeling.versions import (
    ClosedVersion,
    ImportReport,
    LabelTask,
    Objects,
    VersionLabeling,
)

log = logging.getLogger("screwops.labeling")

EXPIRY_INTERVAL_S = 3600.0
"""How often review items past their retention are deleted."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LabelingService:
    """Labels dataset versions and keeps the review queue (see the module docstring).

    Each method is :class:`VersionLabeling`'s or :class:`ReviewQueue`'s of the same name (the
    queue's ``page`` for :meth:`review_queue`); their docstrings say what each raises.
    """

    def __init__(
        self,
        store: LabelingStore,
        objects: Objects,
        publish: Publish,
        *,
        rules: Rules,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._versions = VersionLabeling(
            store, objects, publish, reservation=rules.reservation, clock=clock
        )
        self._review = ReviewQueue(
            store, objects, publish, self._versions, policy=rules.review, clock=clock
        )

    # --- events ----------------------------------------------------------------------------------

    async def on_dataset_ingested(self, event: DatasetIngested) -> None:
        await self._versions.on_dataset_ingested(event)

    async def on_inspection_completed(self, event: InspectionCompleted) -> None:
        await self._review.on_inspection_completed(event)

    async def on_training_requested(self, event: TrainingRequested) -> None:
        await self._review.on_training_requested(event)

    async def recover(self) -> None:
        await self._versions.recover()

    async def keep_expiring(self, interval_s: float) -> None:
        """Every ``interval_s``, from the start, drop review items past their retention; runs
        until cancelled. A database away is logged and tried again next time."""
        while True:
            try:
                await self._review.expire()
            except TransientError as error:
                log.warning("cannot expire old review items yet: %s", error.message)
            await asyncio.sleep(interval_s)

    # --- annotators ------------------------------------------------------------------------------

    async def next_unlabeled(self, dataset_id: str, annotator: str) -> LabelTask:
        return await self._versions.next_unlabeled(dataset_id, annotator)

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
        return await self._versions.submit_label(
            dataset_id,
            sha256,
            label,
            annotator=annotator,
            defect_type=defect_type,
            labeled_at=labeled_at,
        )

    async def import_labels(
        self, dataset_id: str, fmt: LabelFileFormat, content: bytes, *, annotator: str
    ) -> ImportReport:
        return await self._versions.import_labels(dataset_id, fmt, content, annotator=annotator)

    async def close_version(
        self, dataset_id: str, operator: str, reason: str = "", version: int | None = None
    ) -> ClosedVersion:
        return await self._versions.close_version(dataset_id, operator, reason, version)

    # --- reviewers -------------------------------------------------------------------------------

    async def review_queue(
        self, line_id: str, *, include_images: bool, page_size: int, page_token: str
    ) -> ReviewPage:
        return await self._review.page(
            line_id, include_images=include_images, page_size=page_size, page_token=page_token
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
        return await self._review.submit_review(
            inspection_id,
            label,
            reviewer=reviewer,
            defect_type=defect_type,
            reviewed_at=reviewed_at,
        )


__all__ = [
    "ClosedVersion",
    "ImportReport",
    "LabelTask",
    "LabelingService",
    "Objects",
    "ReviewPage",
    "ReviewResult",
]
