"""The gateway's state in MongoDB: which version of each model is in production.

The gateway owns the ``serving_state`` collection (one document per model); no other service
reads it. It lets a restarted gateway, or a second instance whose consumer did not see the event,
serve the right version at once. A change is recorded only if it is newer than the one stored
by the registry's count of the alias's moves (the events' ``sequence``), not by any clock, so a
redelivered, late, replayed or out-of-order event never moves production back.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    async def production(self, model_name: str) -> ServingModel | None:
        """The recorded production version of ``model_name``; None before any deployment."""
        ...

    async def set_production(self, model: ServingModel) -> ServingModel:
        """Record ``model`` unless a newer change is recorded; return what is recorded now."""
        ...


class MongoServingStateStore:
    """:class:`ServingStateStore` on motor; works on FerretDB v1 and MongoDB alike."""

    def __init__(self, db: AsyncIOMotorDatabase[Any]) -> None:
        self._collection = db[SERVING_STATE]

    async def production(self, model_name: str) -> ServingModel | None:
        with mongo_errors():
            doc = await self._collection.find_one({"_id": model_name})
        return _model(doc) if doc else None

    async def set_production(self, model: ServingModel) -> ServingModel:
        # The filter matches only an older record (one recorded before moves were numbered is
        # older than any); when a newer (or the same) change is stored, the upsert collides with
        # its _id, which says "keep what is there".
        try:
            with mongo_errors():
                await self._collection.update_one(
                    {
                        "_id": model.model_name,
                        "$or": [
                            {"sequence": {"$lt": model.sequence}},
                            {"sequence": {"$exists": False}},
                        ],
                    },
                    {
                        "$set": {
                            "triton_model": model.triton_model,
                            "version": model.version,
                            "changed_at": model.changed_at,
                            "cause": model.cause,
                            "threshold": model.threshold,
                            "model_kind": model.model_kind.value,
                            "frame_size": model.frame_size,
                            "sequence": model.sequence,
                        }
                    },
                    upsert=True,
                )
        except AlreadyExistsError:
            recorded = await self.production(model.model_name)
            return recorded or model
        return model


def _model(doc: dict[str, Any]) -> ServingModel:
    return ServingModel(
        model_name=doc["_id"],
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
