"""The run record contract: what the trainer stores in MongoDB is what the console and
``screwops runs`` read, in the same collection under the same field names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from screwops_contracts.runs import RUNS, EpochRecord, RunRecord, run_record

STARTED = datetime(2026, 11, 24, 9, 0)


def record(**changes: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "run_id": "run-0123456789ab",
        "model_name": "screw-classifier",
        "status": "finished",
        "params": {"epochs": 20, "batch_size": 32},
        "seed": 7,
        "git_sha": "abc",
        "packages": {"tensorflow": "2.18"},
        "dataset_id": "screws",
        "dataset_version": 2,
        "dataset_digest": "d" * 64,
        "split_key": "screws/v2/split.json",
        "split_counts": {"train": 10},
        "cause_event_id": "e",
        "correlation_id": "c",
        "attempts": 1,
        "epochs": [EpochRecord(epoch=1, metrics={"loss": 0.7}, ended_at=STARTED)],
        "metrics": {"accuracy": 0.9},
        "best_epoch": 1,
        **RunRecord.keys("run-0123456789ab"),
        "started_at": STARTED,
    }
    return RunRecord(**(fields | changes))


def test_stored_documents_keep_their_collection_and_field_names() -> None:
    # Records already in MongoDB were written under these names: renaming one strands them.
    assert RUNS == "training_runs"
    document = record().document()
    assert document["_id"] == "run-0123456789ab"
    assert set(document) == {
        "_id",
        "run_id",
        "model_name",
        "status",
        "params",
        "seed",
        "git_sha",
        "packages",
        "dataset_id",
        "dataset_version",
        "dataset_digest",
        "split_key",
        "split_counts",
        "cause_event_id",
        "correlation_id",
        "attempts",
        "epochs",
        "metrics",
        "best_epoch",
        "training_seconds",
        "model_kind",
        "threshold",
        "frame_size",
        "artifact_key",
        "history_key",
        "record_key",
        "error",
        "started_at",
        "finished_at",
        "claimed_at",
        "heartbeat_at",
    }
    assert set(document["epochs"][0]) == {"epoch", "metrics", "ended_at"}


def test_a_reader_gets_back_what_the_trainer_wrote_with_aware_times() -> None:
    written = record()
    document = written.document()
    # MongoDB hands datetimes back naive (UTC) to a client without tz_aware.
    document["started_at"] = STARTED
    document["epochs"][0]["ended_at"] = STARTED
    read = run_record(document)
    assert read == written
    assert read.started_at == STARTED.replace(tzinfo=UTC)
    assert read.epochs[0].ended_at.tzinfo is not None


def test_a_reader_ignores_fields_a_newer_trainer_adds_but_the_writer_refuses_them() -> None:
    document = record().document()
    document["carbon_grams"] = 12.0
    document["epochs"][0]["learning_rate"] = 0.001
    assert run_record(document).run_id == "run-0123456789ab"
    with pytest.raises(ValidationError):
        RunRecord.model_validate({k: v for k, v in document.items() if k != "_id"})
    missing = {k: v for k, v in document.items() if k != "dataset_digest"}
    with pytest.raises(ValidationError):
        run_record(missing)


@pytest.mark.parametrize(
    ("params", "planned"),
    [({"epochs": 20}, 20), ({}, None), ({"epochs": 0}, None), ({"epochs": "20"}, None)],
)
def test_planned_epochs_come_from_the_params(params: dict[str, Any], planned: int | None) -> None:
    assert record(params=params).planned_epochs == planned
