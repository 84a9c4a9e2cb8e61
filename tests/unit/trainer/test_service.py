"""Trainer's core with in-memory stores and a fake fit: what a run is fed, what it records and
stores, when a run is reused or trained again, and which requests are refused."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass

import numpy as np
import pytest
from screwops_contracts import TrainingRequested, TrainingRequestedPayload
from screwops_contracts.datasets import Bucket, Split, SplitName
from screwops_contracts.events import ModelTrained, ModelTrainedPayload
from screwops_contracts.models import ModelKind, run_prefix, saved_model_prefix
from screwops_contracts.runs import EpochRecord
from screwops_errors import (
    FailedPreconditionError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
)
from screwops_trainer.service import EpochSink, TrainingStoppedError
from screwops_trainer.store import run_id
from screwops_trainer.threshold import ThresholdError, choose_threshold

from tests.support import eventually
from tests.unit.trainer.fakes import PACKAGES, PARAMS, Parts, rejected, validated
from tests.unit.validation.builders import balanced


def request(
    dataset_id: str, version: int | None = None, *, model_name: str = "screw-classifier"
) -> TrainingRequested:
    return TrainingRequested.origin(
        TrainingRequestedPayload(
            model_name=model_name,
            dataset_id=dataset_id,
            dataset_version=version,
            reason="score_drift 0.31",
            requested_by="monitor",
        ),
        producer="monitor",
    )


async def test_a_validated_version_is_trained_recorded_stored_and_announced() -> None:
    parts = Parts()
    cause = await validated(parts.objects, "screws", balanced(20))
    payload = await parts.service().on_dataset_validated(cause)

    run = run_id("screw-classifier", cause.payload.dataset_digest, PARAMS)
    assert payload.run_id == run
    assert payload.artifact_key == saved_model_prefix(run, 1)
    assert (payload.dataset_id, payload.dataset_version) == ("screws", 1)
    assert payload.dataset_digest == cause.payload.dataset_digest
    assert payload.reused is False
    assert payload.metrics["val_loss"] == pytest.approx(1.1 / 3)
    [event] = parts.emitted
    assert isinstance(event, ModelTrained)
    assert (event.causation_id, event.correlation_id) == (cause.event_id, cause.correlation_id)
    assert event.payload == payload

    assert parts.objects.keys(Bucket.MODELS, saved_model_prefix(run, 1)) == [
        f"{saved_model_prefix(run, 1)}/saved_model.pb",
        f"{saved_model_prefix(run, 1)}/variables/variables.index",
    ]
    stored = json.loads(
        parts.objects.objects[(Bucket.MODELS, f"{run_prefix(run, 1)}/history.json")]
    )
    assert [e["epoch"] for e in stored["epochs"]] == [1, 2, 3]
    assert stored["best_epoch"] == 3
    assert stored["params"] == PARAMS.model_dump(mode="json")

    record = parts.store.runs[run]
    assert record.status == "finished"
    assert [e.epoch for e in record.epochs] == [1, 2, 3]
    assert record.epochs[0].metrics["loss"] == pytest.approx(1.0)
    assert (record.git_sha, record.seed, record.packages) == ("0123abc", PARAMS.seed, PACKAGES)
    assert record.params == PARAMS.model_dump(mode="json")
    assert (record.dataset_id, record.dataset_version) == ("screws", 1)
    assert record.dataset_digest == cause.payload.dataset_digest
    assert record.attempts == 1
    assert record.cause_event_id == str(cause.event_id)
    assert record.finished_at is not None
    assert record.finished_at >= record.started_at
    as_json = json.loads(parts.objects.objects[(Bucket.MODELS, f"{run_prefix(run, 1)}/run.json")])
    assert as_json["status"] == "finished"
    assert as_json["run_id"] == run
    assert parts.store.datasets["screws@v1"].status == "validated"


async def test_the_threshold_is_chosen_on_the_exported_models_validation_scores() -> None:
    parts = Parts()
    cause = await validated(parts.objects, "screws", balanced(20))
    payload = await parts.service().on_dataset_validated(cause)

    [call] = parts.fit.calls
    [(_, scored)] = parts.score.calls
    x_val, y_val = call.validation
    assert np.array_equal(scored, x_val)
    expected = choose_threshold(
        np.linspace(0.0, 1.0, len(y_val)), y_val, ModelKind.SUPERVISED, min_recall=0.95
    )
    assert payload.threshold == pytest.approx(expected.threshold)
    assert payload.model_kind is ModelKind.SUPERVISED
    assert payload.metrics["val_recall_at_threshold"] >= 0.95
    assert payload.metrics["val_false_reject_at_threshold"] == expected.false_reject_rate
    record = parts.store.runs[payload.run_id]
    assert record.threshold == payload.threshold
    assert record.model_kind is ModelKind.SUPERVISED


async def test_a_good_only_run_with_too_few_good_validation_images_fails_with_the_reason() -> None:
    parts = Parts(model_kind=ModelKind.GOOD_ONLY)
    cause = await validated(parts.objects, "screws", balanced(20))
    with pytest.raises(ThresholdError, match="needs at least 50 good validation images"):
        await parts.service().on_dataset_validated(cause)

    [record] = parts.store.runs.values()
    assert record.status == "failed"
    assert record.error is not None
    assert record.error.startswith("no threshold: a good-only threshold")
    assert record.model_kind is ModelKind.GOOD_ONLY
    assert parts.emitted == []
    assert parts.objects.keys(Bucket.MODELS, "runs") == []


async def test_the_fit_gets_train_and_validation_frames_of_the_images_size_in_a_thread() -> None:
    parts = Parts()
    cause = await validated(parts.objects, "screws", balanced(20))
    payload = await parts.service().on_dataset_validated(cause)

    [call] = parts.fit.calls
    assert call.thread != threading.current_thread().name
    counts = cause.payload.split_counts
    (x_train, y_train), (x_val, y_val) = call.train, call.validation
    # The builders' images are 64 px: the model's frame is their size, decoded as they are.
    assert x_train.shape == (counts.train, 64, 64, 1)
    assert x_val.shape == (counts.validation, 64, 64, 1)
    assert x_train.dtype == np.uint8
    assert payload.frame_size == 64
    assert parts.store.runs[payload.run_id].frame_size == 64
    assert set(np.unique(y_train)) == {0.0, 1.0}
    # The builders' good screws are bright discs and the bad ones dark: the labels followed.
    split = Split.model_validate_json(
        parts.objects.objects[(Bucket.DATASETS, cause.payload.split_key)]
    )
    assert len(split.assignments) == counts.train + counts.validation + counts.test
    brightest = x_train.reshape(len(y_train), -1).max(axis=1)
    assert float(brightest[y_train == 0.0].min()) > float(brightest[y_train == 1.0].min())
    assert int(y_val.sum()) > 0


async def test_a_pinned_frame_size_fits_every_image_to_it() -> None:
    parts = Parts(frame_size=96)
    cause = await validated(parts.objects, "screws", balanced(20))
    payload = await parts.service().on_dataset_validated(cause)

    [call] = parts.fit.calls
    assert call.train[0].shape[1:] == (96, 96, 1)
    assert payload.frame_size == 96


async def test_epochs_reach_the_store_in_order_and_all_before_the_run_finishes() -> None:
    parts = Parts(params=PARAMS.model_copy(update={"epochs": 6}))
    cause = await validated(parts.objects, "screws", balanced(20))
    payload = await parts.service().on_dataset_validated(cause)

    assert [epoch for _, _, epoch in parts.store.appended] == [1, 2, 3, 4, 5, 6]
    assert {attempt for _, attempt, _ in parts.store.appended} == {1}
    assert parts.store.epochs_at_finish == [6]
    assert [e.epoch for e in parts.store.runs[payload.run_id].epochs] == [1, 2, 3, 4, 5, 6]


@dataclass
class Paused:
    """A run training in the background, its thread held after epoch 1 until ``resume``."""

    parts: Parts
    run: str
    resume: threading.Event
    training: asyncio.Task[ModelTrainedPayload]


async def paused_after_epoch_1() -> Paused:
    parts = Parts()
    cause = await validated(parts.objects, "screws", balanced(20))
    run = run_id("screw-classifier", cause.payload.dataset_digest, PARAMS)
    resume = threading.Event()
    parts.fit.between_epochs = lambda epoch: resume.wait(30) if epoch == 1 else None
    training = asyncio.create_task(parts.service().on_dataset_validated(cause))

    async def first_epoch() -> bool | None:
        record = parts.store.runs.get(run)
        return True if record is not None and len(record.epochs) == 1 else None

    await eventually(first_epoch, within=10, what="epoch 1 in the running record")
    return Paused(parts, run, resume, training)


async def test_epochs_are_visible_while_the_run_is_still_training() -> None:
    paused = await paused_after_epoch_1()
    assert paused.parts.store.runs[paused.run].status == "running"
    paused.resume.set()
    assert (await paused.training).reused is False


async def test_a_finished_run_is_reused_for_the_same_data_without_training_again() -> None:
    parts = Parts()
    first = await validated(parts.objects, "screws", balanced(20))
    trained = await parts.service().on_dataset_validated(first)
    # The same images, labels and split under another dataset name: the same digest.
    again = first.model_copy(
        update={
            "event_id": request("x").event_id,
            "payload": first.payload.model_copy(update={"dataset_id": "screws-copy"}),
        }
    )
    reused = await parts.service().on_dataset_validated(again)

    assert len(parts.fit.calls) == 1
    assert reused.reused is True
    assert (reused.run_id, reused.artifact_key) == (trained.run_id, trained.artifact_key)
    assert reused.metrics == trained.metrics
    assert reused.dataset_id == "screws-copy"
    assert parts.store.runs[trained.run_id].attempts == 1
    one, two = parts.emitted
    assert one.event_id != two.event_id


async def test_a_redelivered_event_announces_its_run_again_with_the_same_event() -> None:
    parts = Parts()
    cause = await validated(parts.objects, "screws", balanced(20))
    first = await parts.service().on_dataset_validated(cause)
    # Crashed after emitting but before the bus recorded the event: delivered again.
    second = await parts.service().on_dataset_validated(cause)

    assert len(parts.fit.calls) == 1
    assert first == second
    assert second.reused is False
    one, two = parts.emitted
    assert one.event_id == two.event_id


async def test_a_run_a_killed_trainer_left_running_is_trained_again() -> None:
    parts = Parts()
    cause = await validated(parts.objects, "screws", balanced(20))
    run = run_id("screw-classifier", cause.payload.dataset_digest, PARAMS)
    parts.fit.fail_at = 2
    with pytest.raises(RuntimeError):
        await parts.service().on_dataset_validated(cause)
    # What a kill leaves: the attempt still "running", one epoch recorded.
    parts.store.runs[run] = parts.store.runs[run].model_copy(
        update={"status": "running", "error": None, "finished_at": None}
    )
    parts.fit.fail_at = None

    payload = await parts.service().on_dataset_validated(cause)

    assert len(parts.fit.calls) == 2
    assert payload.reused is False
    record = parts.store.runs[run]
    assert (record.status, record.attempts) == ("finished", 2)
    assert [e.epoch for e in record.epochs] == [1, 2, 3]


async def test_a_failed_fit_is_recorded_as_failed_and_raised() -> None:
    parts = Parts()
    cause = await validated(parts.objects, "screws", balanced(20))
    parts.fit.fail_at = 3
    with pytest.raises(RuntimeError, match="diverged at epoch 3"):
        await parts.service().on_dataset_validated(cause)

    [record] = parts.store.runs.values()
    assert record.status == "failed"
    assert record.error is not None
    assert "diverged at epoch 3" in record.error
    assert [e.epoch for e in record.epochs] == [1, 2]
    assert parts.emitted == []
    assert parts.objects.keys(Bucket.MODELS, "runs") == []


async def test_a_cancelled_run_stops_its_thread_at_the_next_epoch_and_stays_running() -> None:
    paused = await paused_after_epoch_1()
    paused.training.cancel()
    with pytest.raises(asyncio.CancelledError):
        await paused.training
    paused.resume.set()

    async def thread_ended() -> bool | None:
        return True if paused.parts.fit.ended.is_set() else None

    await eventually(thread_ended, within=10, what="the training thread to stop")
    record = paused.parts.store.runs[paused.run]
    assert (record.status, [e.epoch for e in record.epochs]) == ("running", [1])
    assert paused.parts.emitted == []


async def test_the_sink_refuses_further_epochs_once_stopped() -> None:
    written: list[int] = []

    async def write(epoch: EpochRecord) -> None:
        written.append(epoch.epoch)

    sink = EpochSink(asyncio.get_running_loop(), write)
    await asyncio.to_thread(sink, 1, {"loss": 0.5})
    await sink.drain()
    sink.stop()
    with pytest.raises(TrainingStoppedError):
        await asyncio.to_thread(sink, 2, {"loss": 0.4})
    assert written == [1]


async def test_an_epoch_write_that_fails_does_not_fail_the_run() -> None:
    parts = Parts()
    cause = await validated(parts.objects, "screws", balanced(20))

    async def broken(run: str, attempt: int, epoch: EpochRecord) -> None:
        raise ConnectionError("database briefly gone")

    parts.store.append_epoch = broken  # type: ignore[method-assign]
    payload = await parts.service().on_dataset_validated(cause)

    record = parts.store.runs[payload.run_id]
    assert record.status == "finished"
    assert [e.epoch for e in record.epochs] == [1, 2, 3]


async def test_documents_that_do_not_hash_to_the_announced_digest_are_refused() -> None:
    parts = Parts()
    cause = await validated(parts.objects, "screws", balanced(20))
    forged = cause.model_copy(
        update={"payload": cause.payload.model_copy(update={"dataset_digest": "0" * 64})}
    )
    with pytest.raises(IntegrityError, match="validation announced 0000"):
        await parts.service().on_dataset_validated(forged)
    assert parts.fit.calls == []
    assert parts.store.runs == {}
    assert parts.emitted == []


async def test_a_split_naming_an_unlabeled_image_is_refused() -> None:
    parts = Parts()
    cause = await validated(parts.objects, "screws", balanced(20))
    key = (Bucket.DATASETS, cause.payload.split_key)
    split = Split.model_validate_json(parts.objects.objects[key])
    extra = {**split.assignments, "f" * 64: SplitName.TRAIN}
    parts.objects.objects[key] = (
        split.model_copy(update={"assignments": extra}).model_dump_json().encode()
    )
    with pytest.raises(InvalidInputError, match="which the manifest lacks"):
        await parts.service().on_dataset_validated(cause)
    assert parts.fit.calls == []


async def test_a_request_without_a_version_trains_on_the_newest_validated_one() -> None:
    parts = Parts()
    service = parts.service()
    v1 = await validated(parts.objects, "screws", balanced(20))
    v2 = await validated(parts.objects, "screws", balanced(20, offset=300), version=2)
    await service.on_dataset_rejected(rejected("screws", 3))
    await service.on_dataset_validated(v2)
    await service.on_dataset_validated(v1)

    payload = await service.on_training_requested(request("screws"))

    assert payload.dataset_version == 2
    assert payload.dataset_digest == v2.payload.dataset_digest
    assert payload.reused is True
    assert len(parts.fit.calls) == 2


async def test_a_request_for_an_explicit_version_trains_that_version() -> None:
    parts = Parts()
    service = parts.service()
    v1 = await validated(parts.objects, "screws", balanced(20))
    await service.on_dataset_rejected(rejected("screws", 2))
    await service.on_dataset_validated(v1)
    ask = request("screws", 1)

    payload = await service.on_training_requested(ask)

    assert (payload.dataset_version, payload.reused) == (1, True)
    assert parts.emitted[-1].causation_id == ask.event_id


async def test_requests_that_cannot_be_trained_are_refused_with_the_reason() -> None:
    parts = Parts()
    service = parts.service()
    await service.on_dataset_rejected(rejected("screws", 1))

    with pytest.raises(FailedPreconditionError, match=r"rejected by validation.*class 'bad' has 5"):
        await service.on_training_requested(request("screws", 1))
    with pytest.raises(NotFoundError, match="no validated version of dataset 'screws'"):
        await service.on_training_requested(request("screws"))
    with pytest.raises(NotFoundError, match="screws v7 has not been validated"):
        await service.on_training_requested(request("screws", 7))
    with pytest.raises(InvalidInputError, match="not 'other-model'"):
        await service.on_training_requested(request("screws", 1, model_name="other-model"))
    assert parts.fit.calls == []
    assert parts.emitted == []
