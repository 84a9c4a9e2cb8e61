"""What MongoServingStateStore sends, on an in-memory collection that evaluates exactly those
queries as MongoDB does (``_id``, ``$and``/``$or`` of ``$lt``/``$exists`` on top-level fields, an
upsert colliding with a document the filter does not match): production and a rollout in one
document, each change recorded only when numbered later, a later production move ending the
rollout. No MongoDB in unit tests; the real store's queries on FerretDB are the integration
tests' to run."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, cast

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError
from screwops_gateway.store import SERVING_STATE, MongoServingStateStore, Rollout, ServingState

from tests.unit.gateway.fakes import MODEL, START, deployed


class _Collection:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    async def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        return copy.deepcopy(self.docs.get(query["_id"]))

    async def update_one(
        self, query: dict[str, Any], update: dict[str, Any], *, upsert: bool = False
    ) -> None:
        doc = self.docs.get(query["_id"])
        if doc is None or not _matches(doc, query):
            if not upsert:
                return
            if doc is not None:
                raise DuplicateKeyError("E11000 duplicate key error")
            doc = self.docs[query["_id"]] = {"_id": query["_id"]}
        doc.update(copy.deepcopy(update.get("$set", {})))
        for field in update.get("$unset", {}):
            doc.pop(field, None)


def _matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    for field, wanted in query.items():
        if field == "$and":
            if not all(_matches(doc, part) for part in wanted):
                return False
        elif field == "$or":
            if not any(_matches(doc, part) for part in wanted):
                return False
        elif isinstance(wanted, dict):
            if "$exists" in wanted and (field in doc) != wanted["$exists"]:
                return False
            if "$lt" in wanted and not (field in doc and doc[field] < wanted["$lt"]):
                return False
        elif doc.get(field) != wanted:
            return False
    return True


def store() -> tuple[MongoServingStateStore, _Collection]:
    collection = _Collection()
    db = cast(AsyncIOMotorDatabase[Any], {SERVING_STATE: collection})
    return MongoServingStateStore(db), collection


def rollout(sequence: int, *, share: float = 5.0, state: str = "running") -> Rollout:
    return Rollout(
        model_name=MODEL,
        rollout_id="ro-1",
        strategy="canary",
        state=state,
        candidate=replace(deployed(2), sequence=sequence),
        share=share,
        lines=("line-2",),
        sequence=sequence,
        changed_at=START,
        cause=f"event-{sequence}",
    )


async def test_production_and_its_rollout_read_back_as_written() -> None:
    states, _ = store()

    await states.set_production(deployed(1, sequence=1))
    recorded = await states.set_rollout(rollout(2))

    assert recorded == ServingState(deployed(1, sequence=1), rollout(2))
    assert await states.state(MODEL) == recorded


async def test_a_rollout_change_numbered_no_later_than_the_state_is_kept_out() -> None:
    states, _ = store()
    await states.set_production(deployed(1, sequence=4))

    assert (await states.set_rollout(rollout(3))).rollout is None
    await states.set_rollout(rollout(5, share=25.0))
    assert (await states.set_rollout(rollout(5, share=50.0))).rollout == rollout(5, share=25.0)
    assert (await states.set_rollout(rollout(6, share=50.0))).rollout == rollout(6, share=50.0)


async def test_a_production_move_after_the_rollout_ends_it_and_an_earlier_one_does_not() -> None:
    states, collection = store()
    await states.set_production(deployed(1, sequence=1))
    await states.set_rollout(rollout(3))

    earlier = await states.set_production(deployed(5, sequence=2))
    later = await states.set_production(deployed(2, sequence=4))

    assert earlier == ServingState(deployed(5, sequence=2), rollout(3))
    assert later == ServingState(deployed(2, sequence=4), None)
    assert "rollout_sequence" not in collection.docs[MODEL]
    assert (await states.set_rollout(rollout(3))).rollout is None  # replayed: stays ended


async def test_a_rollout_recorded_before_any_production_leaves_production_unknown() -> None:
    states, _ = store()

    assert await states.state(MODEL) == ServingState()
    assert await states.set_rollout(rollout(2)) == ServingState(None, rollout(2))
    # Production's own moves stay ordered among themselves; the rollout numbered later stays.
    assert await states.set_production(deployed(1, sequence=1)) == ServingState(
        deployed(1, sequence=1), rollout(2)
    )
    assert (await states.set_production(deployed(2, sequence=3))).rollout is None


async def test_a_record_from_before_moves_were_numbered_is_older_than_any_move() -> None:
    states, collection = store()
    collection.docs[MODEL] = {
        "_id": MODEL,
        "triton_model": MODEL,
        "version": 1,
        "changed_at": START,
        "cause": "old",
    }

    assert (await states.state(MODEL)).production == replace(
        deployed(1), cause="old", threshold=0.5, frame_size=0
    )
    assert (await states.set_rollout(rollout(1))).rollout == rollout(1)
