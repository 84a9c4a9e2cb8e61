"""Fenced claims of attempts (screwops_storage.claims) on in-memory documents: every claim and
takeover gets the next number, a live claim is left to its worker, a stale one (silent, or past
the run limit) is taken over, the attempt it was taken from can neither renew nor commit, a lease
notices the loss, and the sweep deletes the objects of attempts that lost, through validation's,
the evaluator's and the trainer's stores and key layouts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import evaluation_report_key
from screwops_contracts.runs import RUNS, RunRecord
from screwops_errors import PermissionDeniedError, UnavailableError
from screwops_evaluator.report import report_attempt as evaluation_attempt
from screwops_evaluator.store import MongoEvaluatorStore
from screwops_storage import (
    CLAIMED_AT,
    HEARTBEAT_AT,
    ClaimLostError,
    ClaimTimes,
    Held,
    Lease,
    claim_attempt,
    claim_when_free,
    holding,
    keep_sweeping,
    renew_claim,
)
from screwops_trainer.store import MongoTrainerStore
from screwops_validation.service import report_attempt, report_keys
from screwops_validation.store import MongoValidationStore

from tests.fakes import FakeDatabase, FakeObjects
from tests.unit.trainer.fakes import running_record

TIMES = ClaimTimes(max_run_s=600.0, heartbeat_s=10.0)
ID = "screws@v1"
STATUS = "validating"


def claims() -> tuple[FakeDatabase, AsyncIOMotorCollection[Any]]:
    db = FakeDatabase()
    return db, cast(AsyncIOMotorCollection[Any], db["reports"])


async def claim(collection: AsyncIOMotorCollection[Any]) -> int | Held | None:
    return await claim_attempt(
        collection, ID, status=STATUS, on_insert={"dataset_id": "screws"}, times=TIMES
    )


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def test_a_live_claim_is_held_and_left_to_its_worker() -> None:
    db, collection = claims()

    assert await claim(collection) == 1
    assert await claim(collection) == Held(1), "a second delivery waits; nothing taken over"
    doc = db["reports"].docs[ID]
    assert doc["dataset_id"] == "screws"
    assert doc["attempts"] == 1
    assert doc[HEARTBEAT_AT] == doc[CLAIMED_AT]


async def test_a_silent_claim_is_taken_over_with_the_next_number_and_fenced_out() -> None:
    """The worker of attempt 1 stalled (no heartbeat for three beats): a redelivery takes the
    work over as attempt 2; attempt 1 can neither renew its claim nor commit its result."""
    db, collection = claims()
    assert await claim(collection) == 1
    db["reports"].docs[ID][HEARTBEAT_AT] = ago(TIMES.silence_s + 1)

    assert await claim(collection) == 2
    assert await claim(collection) == Held(2), "and the taker's claim is live"
    assert not await renew_claim(collection, ID, status=STATUS, attempt=1)
    late = await collection.update_one(holding(ID, status=STATUS, attempt=1), {"$set": {"x": 1}})
    assert late.matched_count == 0, "the stalled attempt's late write is refused"
    assert await renew_claim(collection, ID, status=STATUS, attempt=2)
    done = await collection.update_one(
        holding(ID, status=STATUS, attempt=2), {"$set": {"x": 2}, "$unset": {"status": ""}}
    )
    assert done.matched_count == 1
    assert await claim(collection) is None, "complete"


async def test_a_claim_past_the_run_limit_is_taken_over_though_it_still_beats() -> None:
    """A hung worker's heartbeat may live on: the run limit bounds an attempt regardless."""
    db, collection = claims()
    assert await claim(collection) == 1
    db["reports"].docs[ID][CLAIMED_AT] = ago(TIMES.max_run_s + 1)
    assert await renew_claim(collection, ID, status=STATUS, attempt=1)

    assert await claim(collection) == 2


async def test_a_renewal_keeps_a_long_attempt_alive() -> None:
    db, collection = claims()
    assert await claim(collection) == 1
    db["reports"].docs[ID][HEARTBEAT_AT] = ago(TIMES.silence_s + 1)

    assert await renew_claim(collection, ID, status=STATUS, attempt=1)
    assert await claim(collection) == Held(1)


async def test_claims_from_before_heartbeats_and_claim_times() -> None:
    db, collection = claims()
    docs = db["reports"].docs
    docs[ID] = {"_id": ID, "status": STATUS, "attempts": 3, CLAIMED_AT: ago(1)}
    assert await claim(collection) == Held(3), "alive from its claim time"
    docs[ID][CLAIMED_AT] = ago(1).replace(tzinfo=None)
    assert await claim(collection) == Held(3), "as a client without tz_aware reads it"
    docs[ID] = {"_id": ID, "status": STATUS, "attempts": 3}
    assert await claim(collection) == 4, "no claim time: abandoned"


async def test_a_complete_document_is_not_claimed() -> None:
    db, collection = claims()
    db["reports"].docs[ID] = {"_id": ID, "attempts": 1, "passed": True}

    assert await claim(collection) is None
    assert db["reports"].docs[ID]["attempts"] == 1


async def test_waiting_for_a_held_claim_ends_with_what_the_claim_answers() -> None:
    answers: list[int | Held | str] = [Held(1), Held(1), "record"]
    calls = 0

    async def next_answer() -> int | Held | str:
        nonlocal calls
        calls += 1
        return answers.pop(0)

    got = await claim_when_free(
        next_answer, times=ClaimTimes(max_run_s=1, heartbeat_s=0.001), name=ID
    )
    assert (got, calls) == ("record", 3)


async def test_a_lease_renews_and_notices_the_claim_taken_over() -> None:
    beats: list[bool | Exception] = [True, UnavailableError("away"), False]
    renewed = asyncio.Event()

    async def renew() -> bool:
        answer = beats.pop(0)
        if not beats:
            renewed.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async with Lease(renew, interval_s=0.001, name=ID) as lease:
        lease.check()
        await asyncio.wait_for(renewed.wait(), 5)
        await asyncio.sleep(0)  # the last beat's answer is applied
        assert lease.lost, "a database away does not lose it; a refused renewal does"
        with pytest.raises(ClaimLostError):
            lease.check()


async def test_the_sweep_deletes_the_objects_of_attempts_that_lost() -> None:
    """Validation: v1 was completed by attempt 2 (attempt 1's files lost), v2 is running as
    attempt 3 (1 and 2 fenced out, 3 live); files younger than the minimum age, of a version
    with no record, or not an attempt's stay."""
    db, objects = FakeDatabase(), FakeObjects()
    store = MongoValidationStore(cast(AsyncIOMotorDatabase[Any], db))
    reports = db["validation_reports"].docs
    reports["screws@v1"] = {
        "_id": "screws@v1",
        "attempts": 2,
        "report_key": report_keys("screws", 1, 2).report,
    }
    reports["screws@v2"] = {"_id": "screws@v2", "status": STATUS, "attempts": 3}
    written = {
        (version, attempt): report_keys("screws", version, attempt)
        for version, attempt in ((1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 1))
    }
    for keys in written.values():
        for key in (keys.report, keys.report_html):
            await objects.put_named(Bucket.DATASETS, key, b"{}")
    await objects.put_named(Bucket.DATASETS, "screws/v1/manifest.json", b"{}")
    for stored in objects.modified:
        objects.modified[stored] = ago(7200)
    await objects.put_named(Bucket.DATASETS, report_keys("screws", 2, 2).split, b"new")

    swept = await store.sweep_attempts(objects, report_attempt, min_age_s=3600)

    lost = {written[v, a].report for v, a in ((1, 1), (2, 1), (2, 2))}
    lost |= {written[v, a].report_html for v, a in ((1, 1), (2, 1), (2, 2))}
    assert set(swept) == lost
    left = {key for _, key in objects.objects}
    assert not left & lost
    assert {written[1, 2].report, written[2, 3].report, written[3, 1].report} <= left
    assert {"screws/v1/manifest.json", report_keys("screws", 2, 2).split} <= left


async def test_the_sweep_keeps_the_recorded_evaluation_report() -> None:
    db, objects = FakeDatabase(), FakeObjects()
    store = MongoEvaluatorStore(cast(AsyncIOMotorDatabase[Any], db))
    db["evaluations"].docs["eval-1"] = {
        "_id": "eval-1",
        "attempts": 2,
        "report_key": evaluation_report_key("eval-1", 2),
    }
    for key in (
        evaluation_report_key("eval-1", 1),
        evaluation_report_key("eval-1", 2),
        evaluation_report_key("eval-1"),
    ):
        await objects.put_named(Bucket.MODELS, key, b"{}")

    assert await store.sweep_attempts(objects, evaluation_attempt, min_age_s=0) == [
        evaluation_report_key("eval-1", 1)
    ]
    assert (Bucket.MODELS, evaluation_report_key("eval-1")) in objects.objects


async def test_the_sweep_loop_outlives_a_database_away_and_a_refused_delete() -> None:
    failures: list[Exception] = [UnavailableError("away"), PermissionDeniedError("no delete")]
    swept = asyncio.Event()

    async def sweep() -> None:
        if failures:
            raise failures.pop(0)
        swept.set()

    loop = asyncio.create_task(keep_sweeping(sweep, interval_s=0.001))
    try:
        await asyncio.wait_for(swept.wait(), 5)
        assert not loop.done(), "still sweeping"
    finally:
        loop.cancel()


async def test_a_run_is_claimed_fenced_and_never_restarted_once_finished() -> None:
    """The trainer's claim: a failed run is started again with the next number, a live one is
    held, a finished one is answered as it is (a late start can no longer mark it running), and
    only the latest attempt completes it."""
    db = FakeDatabase()
    store = MongoTrainerStore(cast(AsyncIOMotorDatabase[Any], db))
    record = running_record("run-1")

    first = await store.start_run(record, times=TIMES)
    assert isinstance(first, RunRecord)
    assert (first.attempts, first.artifact_key) == (1, RunRecord.keys("run-1", 1)["artifact_key"])
    assert await store.start_run(record, times=TIMES) == Held(1)
    assert await store.finish_run(first.model_copy(update={"status": "failed"}))
    second = await store.start_run(record, times=TIMES)
    assert isinstance(second, RunRecord)
    assert (second.status, second.attempts) == ("running", 2)
    assert not await store.finish_run(first.model_copy(update={"status": "finished"}))
    assert await store.finish_run(second.model_copy(update={"status": "finished"}))

    again = await store.start_run(record, times=TIMES)
    assert isinstance(again, RunRecord)
    assert (again.status, again.attempts, again.artifact_key) == (
        "finished",
        2,
        RunRecord.keys("run-1", 2)["artifact_key"],
    )


async def test_the_sweep_keeps_the_recorded_runs_artifacts() -> None:
    db, objects = FakeDatabase(), FakeObjects()
    store = MongoTrainerStore(cast(AsyncIOMotorDatabase[Any], db))
    db[RUNS].docs["run-1"] = {
        "_id": "run-1",
        "status": "finished",
        "attempts": 2,
        "artifact_key": RunRecord.keys("run-1", 2)["artifact_key"],
    }
    for attempt in (1, 2):
        for name in ("saved_model/saved_model.pb", "run.json"):
            await objects.put_named(Bucket.MODELS, f"runs/run-1/attempts/{attempt}/{name}", b"x")

    swept = await store.sweep_attempts(objects, min_age_s=0)

    assert sorted(swept) == [
        "runs/run-1/attempts/1/run.json",
        "runs/run-1/attempts/1/saved_model/saved_model.pb",
    ]
    assert objects.keys(Bucket.MODELS, "runs/run-1/attempts/2") == [
        "runs/run-1/attempts/2/run.json",
        "runs/run-1/attempts/2/saved_model/saved_model.pb",
    ]
