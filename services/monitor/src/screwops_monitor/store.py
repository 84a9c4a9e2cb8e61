"""The monitor's state in MongoDB: production, baselines, references, the windows, the alarms, the
cooldown.

The monitor owns these collections; no other service reads them.

* ``monitor_production`` — one document per model, ``_id`` the model name: the version behind
  ``production`` as the registry last announced it. ``model.deployed`` and ``model.rolled_back``
  are not ordered with each other, so a move is kept only if it happened after the one recorded
  (compare-and-set on its time).
* ``monitor_versions`` — one per deployed version, ``_id`` ``<name>@v<N>``: its run and its
  baseline (the test-split scores of its evaluation), since ``model.rolled_back`` names only the
  version it returns to.
* ``monitor_reference`` — one per inspection in the production version's reference window (its
  first inspections), ``_id`` the inspection's event id; a restart rebuilds the reference from all
  of them, full or still filling. Never pruned: only the next move deletes them.
* ``monitor_observations`` — one per later inspection of the production version, ``_id`` the
  inspection's event id (a redelivery writes the same document); the score window is rebuilt
  from the latest of them after a restart, and older ones are pruned as the window moves on.
* ``monitor_reviews`` — one per reviewed inspection, ``_id`` the inspection's id (a second review
  replaces the first); the accuracy window, likewise.
* ``monitor_alarms`` — one per fired alarm, ``_id`` ``<name>@v<N>/<signal>``: no document means
  armed. Firing is a claim (insert, or flip an armed one) made before the announcement, naming
  the event that fired it, so two instances cannot both fire and a redelivery of that event
  announces it again rather than never.
* ``monitor_training_requests`` — one per model, ``_id`` the model name: the last training
  request, claimed the same way, so the cooldown holds across restarts and instances.
* ``monitor_rollouts`` — one per model, ``_id`` the model name: the registry's newest change of
  its latest rollout (``model.rollout_changed``) and when its current step began, kept only if
  newer by the registry's sequence, so a restarted controller knows the running rollout; its
  figures are not kept (see :mod:`screwops_monitor.rollouts`).

Production moving to another version deletes the model's reference, observations, reviews and
alarms: a new version (or one rolled back to) starts with a reference to fill, an empty window and
armed alarms; the cooldown stays.

:class:`MonitorStore` is the interface; :class:`MongoMonitorStore` implements it on motor for
FerretDB v1 and MongoDB alike (no transactions: every write is one idempotent document write);
the unit tests use an in-memory fake.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_contracts import ModelRolloutChangedPayload
from screwops_errors import AlreadyExistsError
from screwops_storage import IndexSpec, ensure_indexes, mongo_errors

from screwops_monitor.signals import Baseline, Observation, Review

PRODUCTION = "monitor_production"
VERSIONS = "monitor_versions"
REFERENCE = "monitor_reference"
OBSERVATIONS = "monitor_observations"
REVIEWS = "monitor_reviews"
ALARMS = "monitor_alarms"
TRAINING_REQUESTS = "monitor_training_requests"
ROLLOUTS = "monitor_rollouts"

INDEXES = (
    IndexSpec(VERSIONS, (("model_name", 1), ("version", 1)), unique=True),
    IndexSpec(REFERENCE, (("model_name", 1), ("version", 1), ("seen_at", 1))),
    IndexSpec(OBSERVATIONS, (("model_name", 1), ("version", 1), ("seen_at", 1))),
    IndexSpec(REVIEWS, (("model_name", 1), ("version", 1), ("seen_at", 1))),
    IndexSpec(ALARMS, (("model_name", 1), ("version", 1))),
)


def version_id(model_name: str, version: int) -> str:
    return f"{model_name}@v{version}"


def alarm_id(model_name: str, version: int, signal: str) -> str:
    return f"{version_id(model_name, version)}/{signal}"


@dataclass(frozen=True)
class Production:
    """The version behind ``production`` of a model, since when, and the event (and its type)
    that moved it there."""

    model_name: str
    version: int
    since: datetime
    event_id: str
    moved_by: str = ""


@dataclass(frozen=True)
class ServedVersion:
    """A deployed version: the run it came from and its baseline (None: no report was found)."""

    model_name: str
    version: int
    run_id: str
    baseline: Baseline | None


@dataclass(frozen=True)
class Firing:
    """A fired alarm: the event that tipped the signal over, and the numbers."""

    signal: str
    cause_event_id: str
    value: float
    threshold: float
    window: int
    fired_at: datetime


@dataclass(frozen=True)
class TrainingClaim:
    """A training request the monitor made for a model: when, why, and what caused it."""

    model_name: str
    cause_event_id: str
    requested_at: datetime
    reason: str


@dataclass(frozen=True)
class RolloutRecord:
    """The registry's newest change of a model's latest rollout, and when its step began (the
    change that started, advanced or resumed it)."""

    rollout: ModelRolloutChangedPayload
    step_started_at: datetime


class Objects(Protocol):
    """The part of :class:`screwops_storage.ObjectStore` the monitor uses."""

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes: ...


class MonitorStore(Protocol):
    """What the monitor needs from its database."""

    async def ensure_indexes(self) -> None:
        """Create the indexes of the collections the monitor owns."""
        ...

    async def get_production(self, model_name: str) -> Production | None:
        """Production of ``model_name`` as last announced; None before any deployment."""
        ...

    async def set_production(self, production: Production) -> bool:
        """Record ``production`` unless a move at or after ``production.since`` is recorded.

        Returns:
            True when recorded; False when the record already names a later (or the same) move.
        """
        ...

    async def save_version(self, served: ServedVersion) -> None:
        """Insert or replace what is known of a deployed version (idempotent)."""
        ...

    async def get_version(self, model_name: str, version: int) -> ServedVersion | None:
        """What is known of a deployed version, if it was seen deployed."""
        ...

    async def reset(self, model_name: str) -> None:
        """Forget the model's reference, observations, reviews and alarms (production moved)."""
        ...

    async def add_reference(self, model_name: str, version: int, item: Observation) -> None:
        """Keep an inspection of the version's reference window (idempotent by its event id)."""
        ...

    async def reference(self, model_name: str, version: int) -> list[Observation]:
        """The version's reference window as kept, oldest first."""
        ...

    async def add_observation(self, model_name: str, version: int, item: Observation) -> None:
        """Keep an inspection of the production version after its reference (idempotent by its
        event id)."""
        ...

    async def recent_observations(
        self, model_name: str, version: int, limit: int
    ) -> list[Observation]:
        """The latest ``limit`` observations of the version, oldest first."""
        ...

    async def prune_observations(self, model_name: str, version: int, before: datetime) -> int:
        """Delete the version's observations seen before ``before``; how many went."""
        ...

    async def add_review(self, model_name: str, version: int, item: Review) -> None:
        """Keep a review of an inspection of the version (a later one replaces it)."""
        ...

    async def recent_reviews(self, model_name: str, version: int, limit: int) -> list[Review]:
        """The latest ``limit`` reviews of the version, oldest first."""
        ...

    async def prune_reviews(self, model_name: str, version: int, before: datetime) -> int:
        """Delete the version's reviews seen before ``before``; how many went."""
        ...

    async def fired(self, model_name: str, version: int) -> dict[str, str]:
        """The version's fired alarms: signal -> the event that fired it."""
        ...

    async def claim_firing(self, model_name: str, version: int, firing: Firing) -> bool:
        """Fire an armed alarm.

        Returns:
            True when this call fired it, or it was fired by ``firing.cause_event_id`` before
            (a redelivery); False when another event fired it.
        """
        ...

    async def rearm(self, model_name: str, version: int, signal: str) -> None:
        """Arm the alarm again (idempotent)."""
        ...

    async def claim_training(self, claim: TrainingClaim, cooldown: timedelta) -> bool:
        """Record a training request unless another was made within ``cooldown`` before it.

        Returns:
            True when recorded, or when the request within the cooldown is this cause's own (a
            redelivery); False when the cooldown holds.
        """
        ...

    async def last_training(self, model_name: str) -> TrainingClaim | None:
        """The last training request made for the model."""
        ...

    async def get_rollout(self, model_name: str) -> RolloutRecord | None:
        """The model's latest rollout as last kept; None when it never had one."""
        ...

    async def save_rollout(self, record: RolloutRecord) -> bool:
        """Keep ``record`` unless a change with the same or a later sequence is kept.

        Returns:
            True when kept; False when the kept one is as new or newer.
        """
        ...


class MongoMonitorStore:
    """:class:`MonitorStore` on motor; works on FerretDB v1 and MongoDB alike."""

    def __init__(self, db: AsyncIOMotorDatabase[Any]) -> None:
        self._db = db

    async def ensure_indexes(self) -> None:
        await ensure_indexes(self._db, INDEXES)

    # --- production and versions -----------------------------------------------------------

    async def get_production(self, model_name: str) -> Production | None:
        with mongo_errors():
            doc = await self._db[PRODUCTION].find_one({"_id": model_name})
        if doc is None:
            return None
        return Production(
            model_name=doc["_id"],
            version=doc["version"],
            since=doc["since"],
            event_id=doc["event_id"],
            moved_by=doc.get("moved_by", ""),
        )

    async def set_production(self, production: Production) -> bool:
        fields = {
            "version": production.version,
            "since": production.since,
            "event_id": production.event_id,
            "moved_by": production.moved_by,
        }
        return await self._set_if_newer(PRODUCTION, production.model_name, "since", fields)

    async def _set_if_newer(
        self, collection: str, key: str, order: str, fields: dict[str, Any]
    ) -> bool:
        """Update the document if its ``order`` field is older, else insert it if absent; an
        insert that loses a race to another instance's tries the update once more, so the newer
        of the two always stays."""
        for _ in range(2):
            with mongo_errors():
                moved = await self._db[collection].update_one(
                    {"_id": key, order: {"$lt": fields[order]}}, {"$set": fields}
                )
            if moved.matched_count == 1:
                return True
            try:
                with mongo_errors():
                    await self._db[collection].insert_one({"_id": key, **fields})
            except AlreadyExistsError:
                continue
            return True
        return False

    async def save_version(self, served: ServedVersion) -> None:
        baseline = served.baseline
        with mongo_errors():
            await self._db[VERSIONS].replace_one(
                {"_id": version_id(served.model_name, served.version)},
                {
                    "model_name": served.model_name,
                    "version": served.version,
                    "run_id": served.run_id,
                    "baseline": None
                    if baseline is None
                    else {
                        "evaluation_id": baseline.evaluation_id,
                        "run_id": baseline.run_id,
                        "dataset_id": baseline.dataset_id,
                        "dataset_version": baseline.dataset_version,
                        "probabilities": list(baseline.probabilities),
                    },
                },
                upsert=True,
            )

    async def get_version(self, model_name: str, version: int) -> ServedVersion | None:
        with mongo_errors():
            doc = await self._db[VERSIONS].find_one({"_id": version_id(model_name, version)})
        if doc is None:
            return None
        stored = doc["baseline"]
        baseline = (
            None
            if stored is None
            else Baseline(
                evaluation_id=stored["evaluation_id"],
                run_id=stored["run_id"],
                dataset_id=stored["dataset_id"],
                dataset_version=stored["dataset_version"],
                probabilities=tuple(float(p) for p in stored["probabilities"]),
            )
        )
        return ServedVersion(doc["model_name"], doc["version"], doc["run_id"], baseline)

    async def reset(self, model_name: str) -> None:
        for collection in (REFERENCE, OBSERVATIONS, REVIEWS, ALARMS):
            with mongo_errors():
                await self._db[collection].delete_many({"model_name": model_name})

    # --- the windows -----------------------------------------------------------------------

    async def add_reference(self, model_name: str, version: int, item: Observation) -> None:
        await self._keep(REFERENCE, model_name, version, item)

    async def reference(self, model_name: str, version: int) -> list[Observation]:
        with mongo_errors():
            cursor = (
                self._db[REFERENCE]
                .find({"model_name": model_name, "version": version})
                .sort([("seen_at", 1), ("_id", 1)])
            )
            docs: list[dict[str, Any]] = await cursor.to_list(length=None)
        return [_observation(doc) for doc in docs]

    async def add_observation(self, model_name: str, version: int, item: Observation) -> None:
        await self._keep(OBSERVATIONS, model_name, version, item)

    async def _keep(
        self, collection: str, model_name: str, version: int, item: Observation
    ) -> None:
        with mongo_errors():
            await self._db[collection].update_one(
                {"_id": item.event_id},
                {
                    "$setOnInsert": {
                        "model_name": model_name,
                        "version": version,
                        "probability": item.probability,
                        "defect": item.defect,
                        "threshold": item.threshold,
                        "seen_at": item.seen_at,
                    }
                },
                upsert=True,
            )

    async def recent_observations(
        self, model_name: str, version: int, limit: int
    ) -> list[Observation]:
        docs = await self._latest(OBSERVATIONS, model_name, version, limit)
        return [_observation(doc) for doc in docs]

    async def prune_observations(self, model_name: str, version: int, before: datetime) -> int:
        return await self._prune(OBSERVATIONS, model_name, version, before)

    async def add_review(self, model_name: str, version: int, item: Review) -> None:
        with mongo_errors():
            await self._db[REVIEWS].update_one(
                {"_id": item.inspection_id},
                {
                    "$set": {
                        "model_name": model_name,
                        "version": version,
                        "correct": item.correct,
                        "seen_at": item.seen_at,
                    }
                },
                upsert=True,
            )

    async def recent_reviews(self, model_name: str, version: int, limit: int) -> list[Review]:
        docs = await self._latest(REVIEWS, model_name, version, limit)
        return [Review(doc["_id"], doc["correct"], doc["seen_at"]) for doc in docs]

    async def prune_reviews(self, model_name: str, version: int, before: datetime) -> int:
        return await self._prune(REVIEWS, model_name, version, before)

    async def _latest(
        self, collection: str, model_name: str, version: int, limit: int
    ) -> list[dict[str, Any]]:
        with mongo_errors():
            cursor = (
                self._db[collection]
                .find({"model_name": model_name, "version": version})
                .sort([("seen_at", -1), ("_id", -1)])
                .limit(limit)
            )
            docs: list[dict[str, Any]] = await cursor.to_list(length=limit)
        docs.reverse()
        return docs

    async def _prune(self, collection: str, model_name: str, version: int, before: datetime) -> int:
        with mongo_errors():
            deleted = await self._db[collection].delete_many(
                {"model_name": model_name, "version": version, "seen_at": {"$lt": before}}
            )
        return int(deleted.deleted_count)

    # --- alarms and the cooldown -----------------------------------------------------------

    async def fired(self, model_name: str, version: int) -> dict[str, str]:
        with mongo_errors():
            docs = await (
                self._db[ALARMS]
                .find({"model_name": model_name, "version": version, "armed": False})
                .to_list(length=None)
            )
        return {doc["signal"]: doc["fired_by"] for doc in docs}

    async def claim_firing(self, model_name: str, version: int, firing: Firing) -> bool:
        key = alarm_id(model_name, version, firing.signal)
        fields = {
            "model_name": model_name,
            "version": version,
            "signal": firing.signal,
            "armed": False,
            "fired_by": firing.cause_event_id,
            "fired_at": firing.fired_at,
            "value": firing.value,
            "threshold": firing.threshold,
            "window": firing.window,
        }
        for _ in range(2):
            with mongo_errors():
                flipped = await self._db[ALARMS].update_one(
                    {"_id": key, "armed": True}, {"$set": fields}
                )
            if flipped.matched_count == 1:
                return True
            with mongo_errors():
                doc = await self._db[ALARMS].find_one({"_id": key})
            if doc is not None:
                if doc["armed"]:
                    continue  # re-armed in between: flip it
                return bool(doc["fired_by"] == firing.cause_event_id)
            try:
                with mongo_errors():
                    await self._db[ALARMS].insert_one({"_id": key, **fields})
            except AlreadyExistsError:
                continue
            return True
        return False

    async def rearm(self, model_name: str, version: int, signal: str) -> None:
        with mongo_errors():
            await self._db[ALARMS].update_one(
                {"_id": alarm_id(model_name, version, signal)}, {"$set": {"armed": True}}
            )

    async def claim_training(self, claim: TrainingClaim, cooldown: timedelta) -> bool:
        fields = {
            "cause_event_id": claim.cause_event_id,
            "requested_at": claim.requested_at,
            "reason": claim.reason,
        }
        for _ in range(2):
            with mongo_errors():
                claimed = await self._db[TRAINING_REQUESTS].update_one(
                    {
                        "_id": claim.model_name,
                        "requested_at": {"$lte": claim.requested_at - cooldown},
                    },
                    {"$set": fields},
                )
            if claimed.matched_count == 1:
                return True
            with mongo_errors():
                doc = await self._db[TRAINING_REQUESTS].find_one({"_id": claim.model_name})
            if doc is not None:
                return bool(doc["cause_event_id"] == claim.cause_event_id)
            try:
                with mongo_errors():
                    await self._db[TRAINING_REQUESTS].insert_one(
                        {"_id": claim.model_name, **fields}
                    )
            except AlreadyExistsError:
                continue
            return True
        return False

    async def last_training(self, model_name: str) -> TrainingClaim | None:
        with mongo_errors():
            doc = await self._db[TRAINING_REQUESTS].find_one({"_id": model_name})
        if doc is None:
            return None
        return TrainingClaim(
            model_name=doc["_id"],
            cause_event_id=doc["cause_event_id"],
            requested_at=doc["requested_at"],
            reason=doc["reason"],
        )

    # --- rollouts --------------------------------------------------------------------------

    async def get_rollout(self, model_name: str) -> RolloutRecord | None:
        with mongo_errors():
            doc = await self._db[ROLLOUTS].find_one({"_id": model_name})
        if doc is None:
            return None
        return RolloutRecord(
            rollout=ModelRolloutChangedPayload.model_validate(doc["rollout"]),
            step_started_at=doc["step_started_at"],
        )

    async def save_rollout(self, record: RolloutRecord) -> bool:
        fields = {
            "sequence": record.rollout.sequence,
            "rollout": record.rollout.model_dump(mode="json"),
            "step_started_at": record.step_started_at,
        }
        return await self._set_if_newer(ROLLOUTS, record.rollout.model_name, "sequence", fields)


def _observation(doc: dict[str, Any]) -> Observation:
    return Observation(
        event_id=doc["_id"],
        probability=doc["probability"],
        defect=doc["defect"],
        threshold=doc["threshold"],
        seen_at=doc["seen_at"],
    )
