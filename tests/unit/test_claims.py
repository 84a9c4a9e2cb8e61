"""Claims of attempts (screwops_storage.claim_attempt, validation's and the evaluator's) on
in-memory documents: a claim older than the work's run limit is taken over, not renumbered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from motor.motor_asyncio import AsyncIOMotorCollection
from screwops_storage import CLAIMED_AT, claim_attempt

from tests.fakes import FakeDatabase

RUN_LIMIT_S = 600.0


def claims() -> tuple[FakeDatabase, AsyncIOMotorCollection[Any]]:
    db = FakeDatabase()
    return db, cast(AsyncIOMotorCollection[Any], db["reports"])


async def claim(collection: AsyncIOMotorCollection[Any]) -> int | None:
    return await claim_attempt(
        collection,
        "screws@v1",
        status="validating",
        on_insert={"dataset_id": "screws"},
        stale_after_s=RUN_LIMIT_S,
    )


async def test_claims_in_flight_get_the_next_number() -> None:
    db, collection = claims()

    assert await claim(collection) == 1
    assert await claim(collection) == 2, "two workers at once, each its own attempt"
    assert db["reports"].docs["screws@v1"]["dataset_id"] == "screws"


async def test_a_claim_older_than_the_run_limit_is_taken_over_with_its_number() -> None:
    """A worker crashed mid-attempt: its redelivery takes over attempt 1 (and its keys) instead
    of claiming 2, 3, ... on every crash of the same work."""
    db, collection = claims()
    assert await claim(collection) == 1
    doc = db["reports"].docs["screws@v1"]
    crashed_at = datetime.now(UTC) - timedelta(seconds=RUN_LIMIT_S + 1)
    doc[CLAIMED_AT] = crashed_at

    assert await claim(collection) == 1
    assert doc[CLAIMED_AT] > crashed_at, "the taken-over claim is fresh again"
    assert await claim(collection) == 2, "and in flight"


async def test_a_claim_from_before_claim_times_were_kept_is_taken_over() -> None:
    db, collection = claims()
    db["reports"].docs["screws@v1"] = {"_id": "screws@v1", "status": "validating", "attempts": 3}

    assert await claim(collection) == 3


async def test_a_complete_document_is_not_claimed() -> None:
    db, collection = claims()
    db["reports"].docs["screws@v1"] = {"_id": "screws@v1", "attempts": 1, "passed": True}

    assert await claim(collection) is None
    assert db["reports"].docs["screws@v1"]["attempts"] == 1
