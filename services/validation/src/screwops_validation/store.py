"""Validation's metadata in MongoDB: one report record per dataset version.

Validation owns ``validation_reports``; no other service reads it (they read the reports in MinIO
and the events). The record's ``_id`` is derived from (dataset id, version), under a unique index
on the pair, so a version has one record however often it is validated. A validation is claimed
first (:mod:`screwops_storage.claims`): the document is ``validating`` with the number of
``attempts`` claimed, and that number names the attempt's split and reports; only the latest
attempt, while it holds the claim, completes the document (a conditional update on
``validating`` and its number), which fixes the verdict, and readers see complete documents only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_contracts import AssertionResult
from screwops_contracts.datasets import Bucket
from screwops_storage import (
    ClaimTimes,
    Held,
    IndexSpec,
    StoredObject,
    claim_attempt,
    commit_attempt,
    ensure_indexes,
    mongo_errors,
    record_after_claim,
    renew_claim,
    sweep_attempts,
)
from screwops_storage.claims import AttemptObjects

from screwops_validation.report import ValidationReport

REPORTS = "validation_reports"
VALIDATING = "validating"
"""The status of a report's document while it is claimed and not yet complete."""

INDEXES = (
    IndexSpec(REPORTS, (("dataset_id", 1), ("version", 1)), unique=True),
    IndexSpec(REPORTS, (("passed", 1),)),
)


def report_id(dataset_id: str, version: int) -> str:
    """The record's ``_id``: one per version, whoever validates it and however often."""
    return f"{dataset_id}@v{version}"


@dataclass(frozen=True)
class ReportRecord:
    """What is kept in MongoDB about a version's validation: the verdict and where to read more."""

    dataset_id: str
    version: int
    passed: bool
    cause_event_id: str
    report_key: str
    report_html_key: str
    split_key: str | None
    dataset_digest: str | None
    split_counts: dict[str, int]
    assertions: list[AssertionResult]

    @property
    def id(self) -> str:
        return report_id(self.dataset_id, self.version)

    @classmethod
    def of(cls, report: ValidationReport) -> ReportRecord:
        """The record of ``report``."""
        return cls(
            dataset_id=report.dataset_id,
            version=report.version,
            passed=report.passed,
            cause_event_id=report.cause_event_id,
            report_key=report.keys.report,
            report_html_key=report.keys.report_html,
            split_key=report.split_key,
            dataset_digest=report.dataset_digest,
            split_counts=report.split.counts.model_dump(),
            assertions=list(report.assertions),
        )


class Objects(AttemptObjects, Protocol):
    """The part of :class:`screwops_storage.ObjectStore` validation uses."""

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes: ...

    async def put_named(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ...
    ) -> StoredObject: ...

    async def put_once(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ...
    ) -> StoredObject: ...


class ValidationStore(Protocol):
    """What the validation service needs from its database."""

    async def ensure_indexes(self) -> None:
        """Create the indexes of the collections validation owns."""
        ...

    async def get_report(self, dataset_id: str, version: int) -> ReportRecord | None:
        """The version's record, if its validation was completed."""
        ...

    async def claim_report(
        self, dataset_id: str, version: int, *, times: ClaimTimes
    ) -> int | Held | ReportRecord:
        """Claim an attempt at validating a version not validated yet: its number (a new one for
        every claim and takeover), :class:`Held` while a live attempt holds it (see
        :func:`screwops_storage.claim_attempt`), or the complete record when there is one."""
        ...

    async def renew_report(self, dataset_id: str, version: int, attempt: int) -> bool:
        """Renew attempt ``attempt``'s claim; False when another attempt took it over."""
        ...

    async def complete_report(self, record: ReportRecord, attempt: int) -> bool:
        """Record ``record`` as its version's verdict if attempt ``attempt`` still holds the
        claim.

        Returns:
            True when recorded; False when the claim was taken over (or the record complete).
        """
        ...

    async def sweep_attempts(
        self,
        objects: AttemptObjects,
        attempt_of: Callable[[str], tuple[str, int] | None],
        *,
        min_age_s: float,
    ) -> list[str]:
        """Delete the datasets bucket's objects of attempts that lost (see
        :func:`screwops_storage.sweep_attempts`; ``attempt_of`` reads a key's record id and
        attempt): the keys deleted."""
        ...

    async def latest_split_key(self, dataset_id: str, *, before: int) -> str | None:
        """The split of the newest validated version of ``dataset_id`` older than ``before``
        (None if there is none): the split a new version carries forward."""
        ...


class MongoValidationStore:
    """:class:`ValidationStore` on motor; works on FerretDB v1 and MongoDB alike."""

    def __init__(self, db: AsyncIOMotorDatabase[Any]) -> None:
        self._db = db

    async def ensure_indexes(self) -> None:
        await ensure_indexes(self._db, INDEXES)

    async def get_report(self, dataset_id: str, version: int) -> ReportRecord | None:
        with mongo_errors():
            doc = await self._db[REPORTS].find_one({"_id": report_id(dataset_id, version)})
        return _record(doc)

    async def claim_report(
        self, dataset_id: str, version: int, *, times: ClaimTimes
    ) -> int | Held | ReportRecord:
        # The pair is set on insert only: the unique index holds it, and it never changes.
        attempt = await claim_attempt(
            self._db[REPORTS],
            report_id(dataset_id, version),
            status=VALIDATING,
            on_insert={
                "dataset_id": dataset_id,
                "version": version,
                "created_at": datetime.now(UTC),
            },
            times=times,
        )
        if attempt is not None:
            return attempt
        return await record_after_claim(
            lambda: self.get_report(dataset_id, version), name=report_id(dataset_id, version)
        )

    async def renew_report(self, dataset_id: str, version: int, attempt: int) -> bool:
        return await renew_claim(
            self._db[REPORTS], report_id(dataset_id, version), status=VALIDATING, attempt=attempt
        )

    async def complete_report(self, record: ReportRecord, attempt: int) -> bool:
        return await commit_attempt(
            self._db[REPORTS],
            record.id,
            status=VALIDATING,
            attempt=attempt,
            update={
                "$set": {
                    "passed": record.passed,
                    "cause_event_id": record.cause_event_id,
                    "report_key": record.report_key,
                    "report_html_key": record.report_html_key,
                    "split_key": record.split_key,
                    "dataset_digest": record.dataset_digest,
                    "split_counts": record.split_counts,
                    "assertions": [a.model_dump(mode="json") for a in record.assertions],
                    "updated_at": datetime.now(UTC),
                },
                "$unset": {"status": ""},
            },
        )

    async def sweep_attempts(
        self,
        objects: AttemptObjects,
        attempt_of: Callable[[str], tuple[str, int] | None],
        *,
        min_age_s: float,
    ) -> list[str]:
        return await sweep_attempts(
            objects,
            self._db[REPORTS],
            bucket=Bucket.DATASETS,
            prefix="",
            attempt_of=attempt_of,
            status=VALIDATING,
            recorded_key="report_key",
            min_age_s=min_age_s,
        )

    async def latest_split_key(self, dataset_id: str, *, before: int) -> str | None:
        with mongo_errors():
            found = await self._db[REPORTS].find_one(
                {"dataset_id": dataset_id, "version": {"$lt": before}, "passed": True},
                sort=[("version", -1)],
                projection={"split_key": 1},
            )
        return None if found is None else found["split_key"]


def _record(doc: Mapping[str, Any] | None) -> ReportRecord | None:
    """The record of a complete report document; None for none or a claim."""
    if doc is None or doc.get("status") == VALIDATING:
        return None
    return ReportRecord(
        dataset_id=doc["dataset_id"],
        version=doc["version"],
        passed=doc["passed"],
        cause_event_id=doc["cause_event_id"],
        report_key=doc["report_key"],
        report_html_key=doc["report_html_key"],
        split_key=doc["split_key"],
        dataset_digest=doc["dataset_digest"],
        split_counts=dict(doc["split_counts"]),
        assertions=[AssertionResult.model_validate(a) for a in doc["assertions"]],
    )
