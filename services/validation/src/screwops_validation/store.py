"""Validation's metadata in MongoDB: one report record per dataset version.

Validation owns ``validation_reports``; no other service reads it (they read the reports in MinIO
and the events). The record's ``_id`` is derived from (dataset id, version), so validating a
version again overwrites its one record instead of adding another.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_contracts import AssertionResult
from screwops_storage import IndexSpec, StoredObject, ensure_indexes, mongo_errors

from screwops_validation.report import ValidationReport

REPORTS = "validation_reports"

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


class Objects(Protocol):
    """The part of :class:`screwops_storage.ObjectStore` validation uses."""

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes: ...

    async def put_named(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ...
    ) -> StoredObject: ...


class ValidationStore(Protocol):
    """What the validation service needs from its database."""

    async def ensure_indexes(self) -> None:
        """Create the indexes of the collections validation owns."""
        ...

    async def save_report(self, record: ReportRecord) -> None:
        """Insert or replace the record of ``record``'s version (idempotent)."""
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

    async def save_report(self, record: ReportRecord) -> None:
        with mongo_errors():
            await self._db[REPORTS].update_one(
                {"_id": record.id},
                {
                    "$set": {
                        "dataset_id": record.dataset_id,
                        "version": record.version,
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
                    "$setOnInsert": {"created_at": datetime.now(UTC)},
                },
                upsert=True,
            )

    async def latest_split_key(self, dataset_id: str, *, before: int) -> str | None:
        with mongo_errors():
            found = await self._db[REPORTS].find_one(
                {"dataset_id": dataset_id, "version": {"$lt": before}, "passed": True},
                sort=[("version", -1)],
                projection={"split_key": 1},
            )
        return None if found is None else found["split_key"]
