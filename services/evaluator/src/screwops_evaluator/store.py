"""The evaluator's metadata in MongoDB: its evaluations and what it knows of production.

The evaluator owns these collections; no other service reads them.

* ``evaluations`` — one document per evaluation, ``_id`` the evaluation id, which is derived from
  the training run: evaluating a run again (a redelivered or re-sent ``model.trained``) finds its
  record and announces the same verdict instead of judging it a second time. A unique index on
  (model_name, run_id) holds the same rule at the database. Each evaluation is claimed first
  (:mod:`screwops_storage.claims`): the document is ``evaluating`` with the number of ``attempts``
  claimed, and that number names the attempt's report; only the latest attempt, while it holds
  the claim, completes the document (a conditional update on ``evaluating`` and its number),
  which fixes its verdict and report, and readers see complete documents only.
* ``evaluator_champions`` — one document per model, ``_id`` the model name: the version behind
  ``production`` as the registry last announced it (``model.deployed``, ``model.rolled_back``).
  The two topics are not ordered with each other, so a move is kept only if it happened after the
  one recorded (compare-and-set on its time).
* ``evaluator_served_runs`` — one document per deployed version, ``_id`` ``<name>@v<N>``: the run
  it was trained in, since ``model.rolled_back`` names only the version it returns to.

:class:`EvaluatorStore` is the interface; :class:`MongoEvaluatorStore` implements it on motor for
FerretDB v1 and MongoDB alike; the unit tests use an in-memory fake.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_contracts import AssertionResult
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import (
    DEFAULT_THRESHOLD,
    EVALUATIONS_PREFIX,
    NO_FRAME_SIZE,
    ModelKind,
)
from screwops_errors import AlreadyExistsError
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

EVALUATIONS = "evaluations"
CHAMPIONS = "evaluator_champions"
SERVED_RUNS = "evaluator_served_runs"
EVALUATING = "evaluating"
"""The status of an evaluation's document while it is claimed and not yet complete."""

INDEXES = (
    IndexSpec(EVALUATIONS, (("model_name", 1), ("run_id", 1)), unique=True),
    IndexSpec(EVALUATIONS, (("model_name", 1), ("evaluated_at", 1))),
    IndexSpec(SERVED_RUNS, (("model_name", 1), ("version", 1)), unique=True),
)


@dataclass(frozen=True)
class EvaluationRecord:
    """What is kept about an evaluation: the verdict, its numbers, and enough to announce it."""

    evaluation_id: str
    model_name: str
    run_id: str
    dataset_id: str
    dataset_version: int
    artifact_key: str
    passed: bool
    metrics: dict[str, float]
    checks: list[AssertionResult]
    champion_version: int | None
    report_key: str
    cause_event_id: str
    evaluated_at: datetime
    threshold: float = DEFAULT_THRESHOLD
    model_kind: ModelKind = ModelKind.SUPERVISED
    frame_size: int = NO_FRAME_SIZE


@dataclass(frozen=True)
class Champion:
    """The version behind ``production`` of a model, where Triton serves it, since when, and the
    threshold it decides at (it is compared at its own, as the line sees it)."""

    model_name: str
    version: int
    triton_model: str
    run_id: str | None
    since: datetime
    event_id: str
    threshold: float = DEFAULT_THRESHOLD
    # The side of the frames it takes (NO_FRAME_SIZE: recorded before frame input; such a
    # champion cannot be scored and is skipped, saying it must be retrained).
    frame_size: int = NO_FRAME_SIZE


class Objects(AttemptObjects, Protocol):
    """The part of :class:`screwops_storage.ObjectStore` the evaluator uses: reading test images,
    writing reports, fetching candidates for staging, and sweeping the reports of attempts that
    lost."""

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes: ...

    async def put_named(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ...
    ) -> StoredObject: ...

    async def put_once(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ...
    ) -> StoredObject: ...

    async def get_directory(self, bucket: str, prefix: str, root: Path) -> list[StoredObject]: ...


class EvaluatorStore(Protocol):
    """What the evaluator needs from its database."""

    async def ensure_indexes(self) -> None:
        """Create the indexes of the collections the evaluator owns."""
        ...

    async def get_evaluation(self, evaluation_id: str) -> EvaluationRecord | None:
        """The evaluation with this id, if it was finished."""
        ...

    async def claim_evaluation(
        self, evaluation_id: str, model_name: str, run_id: str, *, times: ClaimTimes
    ) -> int | Held | EvaluationRecord:
        """Claim an attempt at an unfinished evaluation: its number (a new one for every claim
        and takeover), :class:`Held` while a live attempt holds it (see
        :func:`screwops_storage.claim_attempt`), or the finished record when there is one."""
        ...

    async def renew_evaluation(self, evaluation_id: str, attempt: int) -> bool:
        """Renew attempt ``attempt``'s claim; False when another attempt took it over."""
        ...

    async def complete_evaluation(self, record: EvaluationRecord, attempt: int) -> bool:
        """Record ``record`` as the evaluation's verdict if attempt ``attempt`` still holds the
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
        """Delete the reports of attempts that lost from the models bucket (see
        :func:`screwops_storage.sweep_attempts`; ``attempt_of`` reads a key's evaluation id and
        attempt): the keys deleted."""
        ...

    async def get_champion(self, model_name: str) -> Champion | None:
        """Production of ``model_name`` as last announced; None before any deployment."""
        ...

    async def set_champion(self, champion: Champion) -> bool:
        """Record ``champion`` unless a move at or after ``champion.since`` is recorded.

        Returns:
            True when recorded; False when the record already names a later (or the same) move.
        """
        ...

    async def record_served_run(self, model_name: str, version: int, run_id: str) -> None:
        """Remember which run a deployed version came from (idempotent)."""
        ...

    async def served_run(self, model_name: str, version: int) -> str | None:
        """The run a deployed version came from, if it was seen deployed."""
        ...


class MongoEvaluatorStore:
    """:class:`EvaluatorStore` on motor; works on FerretDB v1 and MongoDB alike."""

    def __init__(self, db: AsyncIOMotorDatabase[Any]) -> None:
        self._db = db

    async def ensure_indexes(self) -> None:
        await ensure_indexes(self._db, INDEXES)

    async def get_evaluation(self, evaluation_id: str) -> EvaluationRecord | None:
        with mongo_errors():
            doc = await self._db[EVALUATIONS].find_one({"_id": evaluation_id})
        return _evaluation(doc)

    async def claim_evaluation(
        self, evaluation_id: str, model_name: str, run_id: str, *, times: ClaimTimes
    ) -> int | Held | EvaluationRecord:
        attempt = await claim_attempt(
            self._db[EVALUATIONS],
            evaluation_id,
            status=EVALUATING,
            on_insert={"model_name": model_name, "run_id": run_id},
            times=times,
        )
        if attempt is not None:
            return attempt
        return await record_after_claim(
            lambda: self.get_evaluation(evaluation_id), name=f"evaluation {evaluation_id}"
        )

    async def renew_evaluation(self, evaluation_id: str, attempt: int) -> bool:
        return await renew_claim(
            self._db[EVALUATIONS], evaluation_id, status=EVALUATING, attempt=attempt
        )

    async def complete_evaluation(self, record: EvaluationRecord, attempt: int) -> bool:
        return await commit_attempt(
            self._db[EVALUATIONS],
            record.evaluation_id,
            status=EVALUATING,
            attempt=attempt,
            update={"$set": _evaluation_fields(record), "$unset": {"status": ""}},
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
            self._db[EVALUATIONS],
            bucket=Bucket.MODELS,
            prefix=EVALUATIONS_PREFIX,
            attempt_of=attempt_of,
            status=EVALUATING,
            recorded_key="report_key",
            min_age_s=min_age_s,
        )

    async def get_champion(self, model_name: str) -> Champion | None:
        with mongo_errors():
            doc = await self._db[CHAMPIONS].find_one({"_id": model_name})
        if doc is None:
            return None
        return Champion(
            model_name=doc["_id"],
            version=doc["version"],
            triton_model=doc["triton_model"],
            run_id=doc["run_id"],
            since=doc["since"],
            event_id=doc["event_id"],
            threshold=doc.get("threshold", DEFAULT_THRESHOLD),
            frame_size=int(doc.get("frame_size", NO_FRAME_SIZE)),
        )

    async def set_champion(self, champion: Champion) -> bool:
        fields = {
            "version": champion.version,
            "triton_model": champion.triton_model,
            "run_id": champion.run_id,
            "since": champion.since,
            "event_id": champion.event_id,
            "threshold": champion.threshold,
            "frame_size": champion.frame_size,
        }
        # Update if older, else insert if absent; an insert that loses a race to another
        # instance's tries the update once more, so the newer of the two always stays.
        for _ in range(2):
            with mongo_errors():
                moved = await self._db[CHAMPIONS].update_one(
                    {"_id": champion.model_name, "since": {"$lt": champion.since}},
                    {"$set": fields},
                )
            if moved.matched_count == 1:
                return True
            try:
                with mongo_errors():
                    await self._db[CHAMPIONS].insert_one({"_id": champion.model_name, **fields})
            except AlreadyExistsError:
                continue
            return True
        return False

    async def record_served_run(self, model_name: str, version: int, run_id: str) -> None:
        with mongo_errors():
            await self._db[SERVED_RUNS].update_one(
                {"_id": f"{model_name}@v{version}"},
                {"$set": {"model_name": model_name, "version": version, "run_id": run_id}},
                upsert=True,
            )

    async def served_run(self, model_name: str, version: int) -> str | None:
        with mongo_errors():
            doc = await self._db[SERVED_RUNS].find_one({"_id": f"{model_name}@v{version}"})
        return None if doc is None else str(doc["run_id"])


def _evaluation(doc: Mapping[str, Any] | None) -> EvaluationRecord | None:
    """The record of a complete evaluation document; None for none or a claim."""
    if doc is None or doc.get("status") == EVALUATING:
        return None
    return EvaluationRecord(
        evaluation_id=doc["_id"],
        model_name=doc["model_name"],
        run_id=doc["run_id"],
        dataset_id=doc["dataset_id"],
        dataset_version=doc["dataset_version"],
        artifact_key=doc["artifact_key"],
        passed=doc["passed"],
        metrics=dict(doc["metrics"]),
        checks=[AssertionResult.model_validate(c) for c in doc["checks"]],
        champion_version=doc["champion_version"],
        report_key=doc["report_key"],
        cause_event_id=doc["cause_event_id"],
        evaluated_at=doc["evaluated_at"],
        # Records from before operating points were judged at 0.5, and were supervised.
        threshold=doc.get("threshold", DEFAULT_THRESHOLD),
        model_kind=ModelKind(doc.get("model_kind", ModelKind.SUPERVISED)),
        frame_size=int(doc.get("frame_size", NO_FRAME_SIZE)),
    )


def _evaluation_fields(record: EvaluationRecord) -> dict[str, Any]:
    return {
        "model_name": record.model_name,
        "run_id": record.run_id,
        "dataset_id": record.dataset_id,
        "dataset_version": record.dataset_version,
        "artifact_key": record.artifact_key,
        "passed": record.passed,
        "metrics": record.metrics,
        "checks": [c.model_dump(mode="json") for c in record.checks],
        "champion_version": record.champion_version,
        "report_key": record.report_key,
        "cause_event_id": record.cause_event_id,
        "evaluated_at": record.evaluated_at,
        "threshold": record.threshold,
        "model_kind": record.model_kind.value,
        "frame_size": record.frame_size,
    }
