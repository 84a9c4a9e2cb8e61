"""What the console reads where no API serves it: training runs and validation reports.

Both are read-only views of what their owner published, parsed leniently (unknown fields are
ignored) so a field the owner adds never breaks the console:

* the trainer's run records, from its collection in MongoDB (the trainer has no API; ``screwops
  runs`` reads the same records), through their contract ``screwops_contracts.runs``.
* validation's reports, from the datasets bucket in MinIO, where validation stores them beside
  the version (``<dataset>/v<n>/validation/report.{json,html}``).
* the evaluator's gate checks, from the evaluation report the registry names for each version
  (bucket ``models``, its ``report_key``): the registry keeps the metrics but not the floors
  they were judged against.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorDatabase
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymongo import DESCENDING
from screwops_contracts.datasets import Bucket, version_prefix
from screwops_contracts.runs import RUNS, RunRecord, run_record
from screwops_errors import IntegrityError, NotFoundError, ScrewOpsError
from screwops_storage import ObjectStore, mongo_errors

log = logging.getLogger("screwops.console")

DATASET_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
"""A dataset id as ingestion accepts it (ingestion.proto, UploadHeader.dataset_id)."""


class RunSource(Protocol):
    """Where the pipeline page gets runs from."""

    async def list_runs(self, limit: int) -> list[RunRecord]:
        """The latest runs first."""
        ...


class MongoRuns:
    """:class:`RunSource` over the trainer's collection (read-only)."""

    def __init__(self, db: AsyncIOMotorDatabase[Any]) -> None:
        self._collection = db[RUNS]

    async def list_runs(self, limit: int) -> list[RunRecord]:
        with mongo_errors():
            found = await (
                self._collection.find({}).sort("started_at", DESCENDING).limit(limit).to_list(limit)
            )
        runs = []
        for document in found:
            try:
                runs.append(run_record(document))
            except ValidationError:
                continue  # a record this view cannot show is left out, not fatal to the page
        return runs


class Check(BaseModel):
    """One assertion of a validation report."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    passed: bool
    expected: str = ""
    message: str = ""


class ReportSummary(BaseModel):
    """The verdict of one dataset version's validation report."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    dataset_id: str
    version: int
    passed: bool
    assertions: list[Check] = Field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        """The assertions that failed."""
        return [check for check in self.assertions if not check.passed]


class GateVerdict(BaseModel):
    """The evaluator's verdict on a version: each gate check with its floor (``expected``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    passed: bool
    checks: list[Check] = Field(default_factory=list)


class ReportSource(Protocol):
    """Where the pipeline page gets validation and evaluation reports from."""

    async def summary(self, dataset_id: str, version: int) -> ReportSummary | None:
        """The version's report, or None when it has not been validated (yet)."""
        ...

    async def html(self, dataset_id: str, version: int) -> bytes | None:
        """The version's self-contained HTML report, or None."""
        ...

    async def gate(self, report_key: str) -> GateVerdict | None:
        """The gate's checks of the evaluation report at ``report_key`` (bucket ``models``), or
        None when there is no such report or it cannot be read."""
        ...


def report_key(dataset_id: str, version: int, suffix: str) -> str:
    """Where validation stores a version's report (``json`` or ``html``), datasets bucket.

    Raises:
        ValueError: ``dataset_id`` is not a valid dataset id or ``version`` is below 1, so a key
            can never be steered outside the version's folder.
    """
    if not DATASET_ID.fullmatch(dataset_id) or dataset_id in {".", ".."} or version < 1:
        raise ValueError(f"no dataset version {dataset_id!r} v{version}")
    return f"{version_prefix(dataset_id, version)}/validation/report.{suffix}"


class Objects(Protocol):
    """What :class:`MinioReports` needs of :class:`screwops_storage.ObjectStore`."""

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes:
        """The object's bytes, checked against their recorded digest."""
        ...


class MinioReports:
    """:class:`ReportSource` over the datasets and models buckets (read-only)."""

    def __init__(self, objects: Objects | ObjectStore) -> None:
        self._objects = objects

    async def _read(self, key: str, bucket: Bucket = Bucket.DATASETS) -> bytes | None:
        try:
            return await self._objects.get_verified(bucket, key)
        except (NotFoundError, IntegrityError):
            return None

    async def summary(self, dataset_id: str, version: int) -> ReportSummary | None:
        body = await self._read(report_key(dataset_id, version, "json"))
        if body is None:
            return None
        try:
            return ReportSummary.model_validate(json.loads(body))
        except (ValueError, ValidationError):
            return None

    async def html(self, dataset_id: str, version: int) -> bytes | None:
        return await self._read(report_key(dataset_id, version, "html"))

    async def gate(self, report_key: str) -> GateVerdict | None:
        if not report_key:
            return None
        try:
            body = await self._read(report_key, Bucket.MODELS)
        except ScrewOpsError as exc:
            # The metrics stay on the page without their verdicts: the registry's rows do not
            # depend on MinIO, and one unreadable report should not hide every version.
            log.warning("evaluation report %s unread: %s", report_key, exc)
            return None
        if body is None:
            return None
        try:
            return GateVerdict.model_validate(json.loads(body))
        except (ValueError, ValidationError):
            return None
