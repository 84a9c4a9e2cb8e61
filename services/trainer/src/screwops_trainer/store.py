"""Trainer's metadata in MongoDB: its training runs, and the dataset versions it has heard of.

Trainer owns two collections and is the only service that writes them:

* ``training_runs`` (:data:`screwops_contracts.runs.RUNS`): one record per run. Its schema is a
  contract, :class:`screwops_contracts.runs.RunRecord`, because the console and ``screwops runs``
  read it (the trainer has no API for its runs); that module says how a record goes through a run.
* ``trainer_datasets``: the verdict on each version, from ``dataset.validated`` and
  ``dataset.rejected``. Services share only events, so this is how the trainer knows the newest
  validated version when ``training.requested`` names none, and refuses a rejected one. No other
  service reads it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from motor.motor_asyncio import AsyncIOMotorDatabase
from pydantic import Field
from pymongo import DESCENDING
from screwops_contracts import DatasetRejected, DatasetValidated
from screwops_contracts.datasets import Bucket
from screwops_contracts.runs import RUNS, EpochRecord, Record, RunRecord
from screwops_storage import (
    CLAIMED_AT,
    HEARTBEAT_AT,
    ClaimTimes,
    Held,
    IndexSpec,
    StoredObject,
    claim_attempt,
    commit_attempt,
    ensure_indexes,
    holding,
    mongo_errors,
    record_after_claim,
    renew_claim,
    sweep_attempts,
)
from screwops_storage.claims import AttemptObjects

from screwops_trainer.params import TrainingParams

DATASETS = "trainer_datasets"

INDEXES = (
    IndexSpec(RUNS, (("started_at", -1),)),
    IndexSpec(RUNS, (("dataset_id", 1), ("dataset_version", 1))),
    IndexSpec(RUNS, (("status", 1),)),
    IndexSpec(DATASETS, (("dataset_id", 1), ("version", 1)), unique=True),
    IndexSpec(DATASETS, (("dataset_id", 1), ("status", 1), ("version", -1))),
)

R = TypeVar("R", bound="Record")

Verdict = Literal["validated", "rejected"]


def run_id(model_name: str, dataset_digest: str, params: TrainingParams) -> str:
    """A run's id: the same model trained on the same data with the same params is one run."""
    identity = {
        "model_name": model_name,
        "dataset_digest": dataset_digest,
        "params": params.model_dump(mode="json"),
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return "run-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


def dataset_record_id(dataset_id: str, version: int) -> str:
    """The ``_id`` of a version's verdict: one per version, however often it is announced."""
    return f"{dataset_id}@v{version}"


class DatasetRecord(Record):
    """What validation said about one dataset version, as far as training needs it."""

    dataset_id: str
    version: int
    status: Verdict
    dataset_digest: str | None = None
    split_key: str | None = None
    split_counts: dict[str, int] = Field(default_factory=dict)
    report_key: str
    failures: list[str] = Field(default_factory=list, description="'name: message' each.")
    event_id: str
    announced_at: datetime

    @property
    def key(self) -> str:
        return dataset_record_id(self.dataset_id, self.version)

    @classmethod
    def validated(cls, event: DatasetValidated) -> DatasetRecord:
        payload = event.payload
        return cls(
            dataset_id=payload.dataset_id,
            version=payload.version,
            status="validated",
            dataset_digest=payload.dataset_digest,
            split_key=payload.split_key,
            split_counts=payload.split_counts.model_dump(),
            report_key=payload.report_key,
            event_id=str(event.event_id),
            announced_at=event.occurred_at,
        )

    @classmethod
    def rejected(cls, event: DatasetRejected) -> DatasetRecord:
        payload = event.payload
        return cls(
            dataset_id=payload.dataset_id,
            version=payload.version,
            status="rejected",
            report_key=payload.report_key,
            failures=[f"{f.name}: {f.message or f.expected}" for f in payload.failures],
            event_id=str(event.event_id),
            announced_at=event.occurred_at,
        )


class Objects(AttemptObjects, Protocol):
    """The part of :class:`screwops_storage.ObjectStore` the trainer uses."""

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes: ...

    async def put_once(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ...
    ) -> StoredObject: ...

    async def put_directory(
        self, bucket: str, root: Path, *, prefix: str
    ) -> list[StoredObject]: ...


class TrainerStore(Protocol):
    """What the trainer needs from its database."""

    async def ensure_indexes(self) -> None:
        """Create the indexes of the collections the trainer owns."""
        ...

    async def record_dataset(self, record: DatasetRecord) -> None:
        """Insert or replace the verdict on ``record``'s version (idempotent)."""
        ...

    async def dataset(self, dataset_id: str, version: int) -> DatasetRecord | None:
        """The verdict on one version, if the trainer has heard of it."""
        ...

    async def newest_validated(self, dataset_id: str) -> DatasetRecord | None:
        """The validated version of ``dataset_id`` with the highest number, if any."""
        ...

    async def run(self, run: str) -> RunRecord | None:
        """One run's record."""
        ...

    async def start_run(self, record: RunRecord, *, times: ClaimTimes) -> RunRecord | Held:
        """Claim a new attempt at the run (a fenced claim, see
        :func:`screwops_storage.claim_attempt`): write ``record`` with status running, no epochs,
        the next number and that attempt's artifact keys, and return it as stored; the finished
        record when the run is finished; :class:`Held` while a live attempt runs it. A failed
        run is started again."""
        ...

    async def renew_run(self, run: str, attempt: int) -> bool:
        """Renew attempt ``attempt``'s claim; False when another attempt took it over."""
        ...

    async def append_epoch(self, run: str, attempt: int, epoch: EpochRecord) -> None:
        """Add a finished epoch to attempt ``attempt`` of a running run (else ignore it)."""
        ...

    async def finish_run(self, record: RunRecord) -> bool:
        """Complete the run with attempt ``record.attempts``'s outcome (finished or failed)
        while that attempt holds the claim, so the record names one attempt's artifacts.

        Returns:
            True when recorded; False when another attempt took the run over.
        """
        ...

    async def sweep_attempts(self, objects: AttemptObjects, *, min_age_s: float) -> list[str]:
        """Delete the models bucket's run artifacts of attempts that lost (see
        :func:`screwops_storage.sweep_attempts`): the keys deleted."""
        ...


class MongoTrainerStore:
    """:class:`TrainerStore` on motor; works on FerretDB v1 and MongoDB alike."""

    def __init__(self, db: AsyncIOMotorDatabase[Any]) -> None:
        self._db = db

    async def ensure_indexes(self) -> None:
        await ensure_indexes(self._db, INDEXES)

    async def record_dataset(self, record: DatasetRecord) -> None:
        document = record.document()
        with mongo_errors():
            await self._db[DATASETS].replace_one({"_id": document["_id"]}, document, upsert=True)

    async def dataset(self, dataset_id: str, version: int) -> DatasetRecord | None:
        with mongo_errors():
            found = await self._db[DATASETS].find_one(
                {"_id": dataset_record_id(dataset_id, version)}
            )
        return _load(DatasetRecord, found)

    async def newest_validated(self, dataset_id: str) -> DatasetRecord | None:
        with mongo_errors():
            found = await (
                self._db[DATASETS]
                .find({"dataset_id": dataset_id, "status": "validated"})
                .sort("version", DESCENDING)
                .limit(1)
                .to_list(1)
            )
        return _load(DatasetRecord, found[0] if found else None)

    async def run(self, run: str) -> RunRecord | None:
        with mongo_errors():
            found = await self._db[RUNS].find_one({"_id": run})
        return _load(RunRecord, found)

    async def start_run(self, record: RunRecord, *, times: ClaimTimes) -> RunRecord | Held:
        fields = record.document()
        for set_by_claim in ("_id", "attempts", "status", CLAIMED_AT, HEARTBEAT_AT):
            fields.pop(set_by_claim)
        fields.update(epochs=[], error=None, finished_at=None)
        claimed = await claim_attempt(
            self._db[RUNS],
            record.run_id,
            status="running",
            on_insert={},
            times=times,
            on_claim=lambda attempt: {**fields, **RunRecord.keys(record.run_id, attempt)},
            reclaimable=("failed",),
        )
        if isinstance(claimed, Held):
            return claimed
        return await record_after_claim(
            lambda: self.run(record.run_id), name=f"run {record.run_id}"
        )

    async def renew_run(self, run: str, attempt: int) -> bool:
        return await renew_claim(self._db[RUNS], run, status="running", attempt=attempt)

    async def append_epoch(self, run: str, attempt: int, epoch: EpochRecord) -> None:
        with mongo_errors():
            await self._db[RUNS].update_one(
                holding(run, status="running", attempt=attempt),
                {"$push": {"epochs": epoch.model_dump(mode="python")}},
            )

    async def finish_run(self, record: RunRecord) -> bool:
        fields = record.document()
        for kept in ("_id", "attempts", CLAIMED_AT, HEARTBEAT_AT):
            fields.pop(kept)
        return await commit_attempt(
            self._db[RUNS],
            record.run_id,
            status="running",
            attempt=record.attempts,
            update={"$set": fields},
        )

    async def sweep_attempts(self, objects: AttemptObjects, *, min_age_s: float) -> list[str]:
        return await sweep_attempts(
            objects,
            self._db[RUNS],
            bucket=Bucket.MODELS,
            prefix=_RUNS_PREFIX,
            attempt_of=run_attempt,
            status="running",
            recorded_key="artifact_key",
            min_age_s=min_age_s,
        )


_RUNS_PREFIX = "runs"
_ATTEMPT_KEY = re.compile(rf"{_RUNS_PREFIX}/(?P<run>[^/]+)/attempts/(?P<attempt>\d+)/.+")


def run_attempt(key: str) -> tuple[str, int] | None:
    """The run id and attempt number of a key under an attempt's prefix
    (:func:`screwops_contracts.models.run_prefix`); None for any other key."""
    found = _ATTEMPT_KEY.fullmatch(key)
    return None if found is None else (found["run"], int(found["attempt"]))


def _fields(document: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "_id"}


def _load(model: type[R], document: Mapping[str, Any] | None) -> R | None:
    return None if document is None else model.model_validate(_fields(document))


__all__ = [
    "DATASETS",
    "INDEXES",
    "DatasetRecord",
    "MongoTrainerStore",
    "TrainerStore",
    "dataset_record_id",
    "run_attempt",
    "run_id",
]
