"""An evaluation taken over from a stalled attempt (past its run limit): the new attempt writes
its report under its own key, completes the record and announces it; the stalled attempt's late
completion is refused, and it announces nothing, its report (other bytes, another key) left
unreferenced for the sweep."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

from screwops_contracts.datasets import Bucket
from screwops_contracts.events import ModelTrained, ModelTrainedPayload
from screwops_contracts.models import evaluation_id_of, evaluation_report_key, saved_model_prefix
from screwops_evaluator.config import Rules, Staging
from screwops_evaluator.report import EvaluationReport
from screwops_evaluator.service import EvaluatorService
from screwops_evaluator.staging import StagingArea
from screwops_evaluator.store import EvaluatorStore

from tests.fakes import FakeObjects, HeldStore, RecordingBus
from tests.support import FRAME_SIZE
from tests.unit.evaluator.builders import SHARP, evaluation_set, stage_split_version
from tests.unit.evaluator.fakes import FakeStore, FakeTriton

MODEL = "screws"
DATASET = "screws"


def replica(
    tmp_path: Path, name: str, store: EvaluatorStore, objects: FakeObjects
) -> tuple[EvaluatorService, RecordingBus]:
    repository = tmp_path / name
    emitted = RecordingBus("evaluator")
    rules = Rules(Staging(repository=repository, model="staging"), concurrency=4)
    staging = StagingArea(FakeTriton(repository), objects, rules.staging)
    service = EvaluatorService(store, objects, staging, emitted.emit, rules=rules)
    return service, emitted


async def test_an_evaluation_taken_over_from_a_stalled_attempt_records_the_new_one(
    tmp_path: Path,
) -> None:
    store, objects = FakeStore(), FakeObjects()
    await stage_split_version(objects, DATASET, *evaluation_set())
    prefix = objects.put_saved_model(saved_model_prefix("run-a"), f"cutoff:{SHARP}".encode())
    trained = ModelTrained.origin(
        ModelTrainedPayload(
            model_name=MODEL,
            run_id="run-a",
            dataset_id=DATASET,
            dataset_version=1,
            dataset_digest="digest",
            artifact_key=prefix,
            metrics={"val_accuracy": 0.99},
            frame_size=FRAME_SIZE,
        ),
        producer="trainer",
    )
    held = HeldStore(store, "complete_evaluation")
    first, first_said = replica(tmp_path, "first", cast(EvaluatorStore, held), objects)
    second, second_said = replica(tmp_path, "second", store, objects)

    slow = asyncio.create_task(first.on_model_trained(trained))
    await asyncio.wait_for(held.reached.wait(), 10)
    await asyncio.sleep(0.01)  # a later millisecond: the two reports differ
    await second.on_model_trained(trained)
    held.release.set()
    assert await slow is None, "the stalled attempt's verdict is discarded"

    evaluation_id = evaluation_id_of(MODEL, "run-a")
    record = store.evaluations[evaluation_id]
    recorded = objects.objects[(Bucket.MODELS, record.report_key)]
    report = EvaluationReport.model_validate_json(recorded)
    assert report.evaluated_at == record.evaluated_at
    assert report.cause_event_id == record.cause_event_id
    assert objects.objects[(Bucket.MODELS, evaluation_report_key(evaluation_id))] == recorded
    assert record.report_key == evaluation_report_key(evaluation_id, 2)
    stalled = objects.objects[(Bucket.MODELS, evaluation_report_key(evaluation_id, 1))]
    assert stalled != recorded, "each attempt's report has its own key"
    [one] = second_said
    assert first_said == []
    assert one.payload.report_key == record.report_key
