"""The gateway's state in MongoDB: which version of each model is in production, and the
rollout of a candidate beside it, if any.

The gateway owns the ``serving_state`` collection (one document per model); no other service
reads it. It lets a restarted gateway, or a second instance whose consumer did not see the event,
serve (and route) as the others do at once. A change is recorded only if it is newer than what is
stored by the registry's count of the model's moves (the events' ``sequence``, one counter for
``production`` and the rollouts beside it), not by any clock, so a redelivered, late, replayed or
out-of-order event never moves production back or revives a rollout that ended.

The rollout sits in the same document (``rollout`` and ``rollout_sequence``), so one read gives
both sides of the routing and every condition filters on top-level fields only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_contracts.models import DEFAULT_THRESHOLD, NO_FRAME_SIZE, ModelKind
from screwops_errors import AlreadyExistsError
from screwops_storage import StoredObject, mongo_errors

SERVING_STATE = "serving_state"


@dataclass(frozen=True)
class ServingModel:
    """The version behind the ``production`` alias, the threshold it decides at, and the event
    that put it there."""

    model_name: str
    triton_model: str
    version: int
    changed_at: datetime
    cause: str
    threshold: float = DEFAULT_THRESHOLD
    model_kind: ModelKind = ModelKind.SUPERVISED
    frame_size: int = NO_FRAME_SIZE
    """The side of the frames the version takes; ``NO_FRAME_SIZE`` for a version from before
    frame input (recorded before frame sizes were), which the gateway refuses to serve."""
    sequence: int = 0
    """The registry's number of the move that put it there (0: recorded, or announced, before
    the registry numbered its moves)."""

    def newer_than(self, other: ServingModel | None) -> bool:
        """Whether this change supersedes ``other``: the registry numbered it later. The event's
        ``occurred_at`` is the producer's clock, which a relay publishing a move late, a replayed
        or a forged event can put anywhere."""
        return other is None or self.sequence > other.sequence


RUNNING = "running"
CANARY = "canary"
SHADOW = "shadow"


@dataclass(frozen=True)
class Rollout:
    """A canary or shadow rollout of ``candidate`` as its last change left it
    (``model.rollout_changed``)."""

    model_name: str
    rollout_id: str
    strategy: str
    """``canary`` (the candidate answers its share) or ``shadow`` (it is also called, off the
    response path, for its share)."""
    state: str
    """``running``, ``paused``, ``completed`` or ``aborted``: only a running one routes."""
    candidate: ServingModel
    share: float
    """Percent of the requests the candidate takes now (0 unless running)."""
    lines: tuple[str, ...]
    """The lines it applies to; empty for every line."""
    sequence: int
    """The registry's number of the change, from the same counter as production's moves."""
    changed_at: datetime
    cause: str

    @property
    def routes(self) -> bool:
        """Whether any request goes (or is mirrored) to the candidate now."""
        return self.state == RUNNING and self.share > 0

    def covers(self, line_id: str) -> bool:
        """Whether requests of ``line_id`` take part."""
        return not self.lines or line_id in self.lines


@dataclass(frozen=True)
class ServingState:
    """What one model's requests go to: production, and the rollout beside it, both numbered by
    the registry's one counter."""

    production: ServingModel | None = None
    rollout: Rollout | None = None

    @property
    def sequence(self) -> int:
        """The number of the latest change applied: a rollout change must be newer."""
        return max(
            self.production.sequence if self.production else 0,
            self.rollout.sequence if self.rollout else 0,
        )


class Objects(Protocol):
    """The part of :class:`screwops_storage.ObjectStore` the prediction log uses."""

    async def ensure_buckets(self, *names: str) -> None: ...

    async def expire_after(self, bucket: str, days: int | None) -> None: ...

    async def put_content(
        self,
        bucket: str,
        data: bytes,
        *,
        prefix: str,
        content_type: str = ...,
        check_existing: bool = ...,
    ) -> StoredObject: ...


class ServingStateStore(Protocol):
    """What the gateway needs from its database."""

    async def state(self, model_name: str) -> ServingState:
        """The recorded production and rollout of ``model_name`` (each None before any)."""
        ...

    async def set_production(self, model: ServingModel) -> ServingState:
        """Record ``model`` unless a newer production is recorded, ending a rollout numbered
        before it; return what is recorded now."""
        ...

    async def set_rollout(self, rollout: Rollout) -> ServingState:
        """Record ``rollout`` unless a change numbered as late or later (of production or a
        rollout) is recorded; return what is recorded now."""
        ...


class MongoServingStateStore:
    """:class:`ServingStateStore` on motor; works on FerretDB v1 and MongoDB alike."""

    def __init__(self, db: AsyncIOMotorDatabase[Any]) -> None:
        self._collection = db[SERVING_STATE]

    async def state(self, model_name: str) -> ServingState:
        with mongo_errors():
            doc = await self._collection.find_one({"_id": model_name})
        if doc is None:
            return ServingState()
        # A rollout recorded before any production leaves a document without one.
        production = _model(model_name, doc) if "triton_model" in doc else None
        rollout = _rollout(model_name, doc["rollout"]) if doc.get("rollout") else None
        return ServingState(production, rollout)

    async def set_production(self, model: ServingModel) -> ServingState:
        # The filter matches only an older record (one recorded before moves were numbered is
        # older than any); when a newer (or the same) change is stored, the upsert collides with
        # its _id, which says "keep what is there".
        await self._upsert(
            model.model_name,
            [_older("sequence", model.sequence)],
            {"$set": _model_fields(model) | {"sequence": model.sequence}},
        )
        # A production move numbered after the rollout ends it (a completion moves production
        # to the candidate first, an abort or rollback leaves none).
        with mongo_errors():
            await self._collection.update_one(
                {"_id": model.model_name, "rollout_sequence": {"$lt": model.sequence}},
                {"$unset": {"rollout": "", "rollout_sequence": ""}},
            )
        return await self.state(model.model_name)

    async def set_rollout(self, rollout: Rollout) -> ServingState:
        await self._upsert(
            rollout.model_name,
            [_older("sequence", rollout.sequence), _older("rollout_sequence", rollout.sequence)],
            {"$set": {"rollout": _rollout_doc(rollout), "rollout_sequence": rollout.sequence}},
        )
        return await self.state(rollout.model_name)

    async def _upsert(
        self, model_name: str, conditions: list[dict[str, Any]], update: dict[str, Any]
    ) -> None:
        try:
            with mongo_errors():
                await self._collection.update_one(
                    {"_id": model_name, "$and": conditions}, update, upsert=True
                )
        except AlreadyExistsError:
            pass  # a change as late or later is recorded: it stays


def _older(field: str, sequence: int) -> dict[str, Any]:
    """A filter matching a document whose ``field`` is numbered before ``sequence`` or absent."""
    return {"$or": [{field: {"$lt": sequence}}, {field: {"$exists": False}}]}


def _model_fields(model: ServingModel) -> dict[str, Any]:
    return {
        "triton_model": model.triton_model,
        "version": model.version,
        "changed_at": model.changed_at,
        "cause": model.cause,
        "threshold": model.threshold,
        "model_kind": model.model_kind.value,
        "frame_size": model.frame_size,
    }


def _model(model_name: str, doc: dict[str, Any]) -> ServingModel:
    return ServingModel(
        model_name=model_name,
        triton_model=doc["triton_model"],
        version=doc["version"],
        changed_at=doc["changed_at"],
        cause=doc["cause"],
        # Recorded before thresholds travelled with versions: served at 0.5, supervised.
        threshold=float(doc.get("threshold", DEFAULT_THRESHOLD)),
        model_kind=ModelKind(doc.get("model_kind", ModelKind.SUPERVISED)),
        frame_size=int(doc.get("frame_size", NO_FRAME_SIZE)),
        sequence=int(doc.get("sequence", 0)),
    )


def _rollout_doc(rollout: Rollout) -> dict[str, Any]:
    return {
        "rollout_id": rollout.rollout_id,
        "strategy": rollout.strategy,
        "state": rollout.state,
        "candidate": _model_fields(rollout.candidate),
        "share": rollout.share,
        "lines": list(rollout.lines),
        "sequence": rollout.sequence,
        "changed_at": rollout.changed_at,
        "cause": rollout.cause,
    }


def _rollout(model_name: str, doc: dict[str, Any]) -> Rollout:
    return Rollout(
        model_name=model_name,
        rollout_id=doc["rollout_id"],
        strategy=doc["strategy"],
        state=doc["state"],
        candidate=replace(_model(model_name, doc["candidate"]), sequence=int(doc["sequence"])),
        share=float(doc["share"]),
        lines=tuple(doc["lines"]),
        sequence=int(doc["sequence"]),
        changed_at=doc["changed_at"],
        cause=doc["cause"],
    )
