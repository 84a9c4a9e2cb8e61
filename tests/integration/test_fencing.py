"""Fenced claims on the real stack (FerretDB or MongoDB, MinIO): a validation taken over from a
stalled worker completes as the new attempt while the stalled worker's late completion is
refused, and the sweep deletes the objects of the attempt that lost from the real bucket, as it
does an evaluation report no record references; a training run taken over from a silent trainer
refuses the old attempt's completion and is never started again once finished. Each step waits
on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from minio import Minio
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_contracts import DatasetValidated
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import evaluation_report_key
from screwops_contracts.runs import RUNS, RunRecord
from screwops_evaluator.report import report_attempt as evaluation_attempt
from screwops_evaluator.store import EVALUATIONS, MongoEvaluatorStore
from screwops_settings import StackSettings
from screwops_storage import (
    HEARTBEAT_AT,
    ClaimTimes,
    Held,
    ObjectStore,
    SweepTimes,
    content_key,
    database,
    sha256_hex,
)
from screwops_trainer.store import MongoTrainerStore
from screwops_validation.config import Rules
from screwops_validation.service import ValidationService, report_keys
from screwops_validation.store import REPORTS, MongoValidationStore, ValidationStore

from tests.fakes import HeldStore, RecordingBus
from tests.support import minio_client, remove_objects, unique
from tests.unit.trainer.fakes import running_record
from tests.unit.validation.builders import File, bad, good, stage_version

DEADLINE_S = 60
TIMES = ClaimTimes(max_run_s=600, heartbeat_s=30)
"""The stalled worker renews its claim no sooner than the test ends; its silence is written."""


@dataclass
class Stack:
    objects: ObjectStore
    s3: Minio
    db: AsyncIOMotorDatabase[Any]
    dataset_id: str
    files: list[File]

    def service(self, store: ValidationStore) -> tuple[ValidationService, RecordingBus]:
        said = RecordingBus("validation")
        service = ValidationService(
            store,
            self.objects,
            said.emit,
            rules=Rules(concurrency=4, claims=TIMES, sweep=SweepTimes(min_age_s=0)),
        )
        return service, said


@pytest.fixture
async def stack(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]
) -> AsyncIterator[Stack]:
    s3 = minio_client(settings.minio)
    objects = ObjectStore(s3)
    await objects.ensure_buckets(Bucket.IMAGES, Bucket.DATASETS, Bucket.MODELS)
    run = unique("run")
    files = [good(i, note=run) for i in range(24)] + [bad(5000 + i, note=run) for i in range(24)]
    # The services' own client: stored times come back aware, as the claims compare them.
    db = database(settings.mongo, mongo_db.name, appname="it-fencing")
    running = Stack(objects, s3, db, unique("it-fence"), files)
    try:
        yield running
    finally:
        db.client.close()
        await asyncio.to_thread(remove_objects, s3, Bucket.DATASETS, f"{running.dataset_id}/")
        await asyncio.to_thread(
            remove_objects,
            s3,
            Bucket.IMAGES,
            *(content_key("raw", sha256_hex(f.data)) for f in files),
        )


async def test_a_validation_taken_over_from_a_stalled_worker_refuses_its_late_write(
    stack: Stack,
) -> None:
    cause = await stage_version(stack.objects, stack.dataset_id, stack.files)
    store = MongoValidationStore(stack.db)
    await store.ensure_indexes()
    paused = HeldStore(store, "complete_report")
    stalled, stalled_said = stack.service(cast(ValidationStore, paused))
    taker, taker_said = stack.service(store)
    record_id = f"{stack.dataset_id}@v1"

    # The stalled worker claims attempt 1, writes its files and pauses before recording them;
    # its last heartbeat is then older than three beats, as a frozen process's would be.
    stalling = asyncio.create_task(stalled.on_dataset_labeled(cause))
    await asyncio.wait_for(paused.reached.wait(), DEADLINE_S)
    silent = datetime.now(UTC) - timedelta(seconds=TIMES.silence_s + 1)
    await stack.db[REPORTS].update_one({"_id": record_id}, {"$set": {HEARTBEAT_AT: silent}})

    report = await asyncio.wait_for(taker.on_dataset_labeled(cause), DEADLINE_S)
    assert report is not None
    assert report.passed
    paused.release.set()
    assert await asyncio.wait_for(stalling, DEADLINE_S) is None, "its late write is refused"

    taken, lost = report_keys(stack.dataset_id, 1, 2), report_keys(stack.dataset_id, 1, 1)
    doc = await stack.db[REPORTS].find_one({"_id": record_id})
    assert doc is not None
    assert (doc["attempts"], doc["report_key"], doc["split_key"]) == (
        2,
        taken.report,
        taken.split,
    )
    fixed = report_keys(stack.dataset_id, 1)
    assert await stack.objects.get_verified(
        Bucket.DATASETS, fixed.split
    ) == await stack.objects.get_verified(Bucket.DATASETS, taken.split)
    [said] = taker_said
    assert isinstance(said, DatasetValidated)
    assert said.payload.split_key == taken.split
    assert stalled_said == []

    written = set(await stack.objects.list_keys(Bucket.DATASETS, stack.dataset_id))
    assert {lost.split, lost.report, lost.report_html} <= written, "left unreferenced"
    swept = await asyncio.wait_for(taker.sweep(), DEADLINE_S)
    assert set(swept) == {lost.split, lost.report, lost.report_html}
    left = set(await stack.objects.list_keys(Bucket.DATASETS, stack.dataset_id))
    assert left == written - set(swept)
    assert {taken.split, taken.report, taken.report_html, fixed.split} <= left


async def test_the_sweep_removes_an_evaluation_report_no_record_references(
    stack: Stack,
) -> None:
    store = MongoEvaluatorStore(stack.db)
    evaluation_id = unique("it-eval")
    await stack.db[EVALUATIONS].insert_one(
        {
            "_id": evaluation_id,
            "attempts": 2,
            "report_key": evaluation_report_key(evaluation_id, 2),
        }
    )
    keys = [evaluation_report_key(evaluation_id, n) for n in (1, 2)]
    try:
        for key in keys:
            await stack.objects.put_once(Bucket.MODELS, key, key.encode())

        swept = await store.sweep_attempts(stack.objects, evaluation_attempt, min_age_s=0)

        assert swept == [keys[0]]
        assert not await stack.objects.exists(Bucket.MODELS, keys[0])
        assert await stack.objects.exists(Bucket.MODELS, keys[1])
    finally:
        prefix = f"{evaluation_report_key(evaluation_id).removesuffix('.json')}/"
        await asyncio.to_thread(remove_objects, stack.s3, Bucket.MODELS, prefix)


async def test_a_run_taken_over_from_a_silent_trainer_refuses_the_old_attempt(
    stack: Stack,
) -> None:
    store = MongoTrainerStore(stack.db)
    await store.ensure_indexes()
    run = unique("it-run")
    record = running_record(run)
    try:
        first = await store.start_run(record, times=TIMES)
        assert isinstance(first, RunRecord)
        assert first.attempts == 1
        assert await store.start_run(record, times=TIMES) == Held(1), "alive: left to it"
        silent = datetime.now(UTC) - timedelta(seconds=TIMES.silence_s + 1)
        await stack.db[RUNS].update_one({"_id": run}, {"$set": {HEARTBEAT_AT: silent}})

        second = await store.start_run(record, times=TIMES)
        assert isinstance(second, RunRecord)
        assert (second.status, second.attempts) == ("running", 2)
        assert not await store.renew_run(run, 1)
        assert not await store.finish_run(first.model_copy(update={"status": "finished"}))
        assert await store.finish_run(second.model_copy(update={"status": "finished"}))
        late = await store.start_run(record, times=TIMES)
        assert isinstance(late, RunRecord)
        assert (late.status, late.attempts, late.artifact_key) == (
            "finished",
            2,
            second.artifact_key,
        ), "a late start leaves the finished run alone"

        for attempt in (first, second):
            await stack.objects.put_once(
                Bucket.MODELS, f"{attempt.artifact_key}/saved_model.pb", attempt.record_key.encode()
            )
        swept = await store.sweep_attempts(stack.objects, min_age_s=0)
        assert swept == [f"{first.artifact_key}/saved_model.pb"]
        assert await stack.objects.exists(Bucket.MODELS, f"{second.artifact_key}/saved_model.pb")
    finally:
        await asyncio.to_thread(remove_objects, stack.s3, Bucket.MODELS, f"runs/{run}/")
