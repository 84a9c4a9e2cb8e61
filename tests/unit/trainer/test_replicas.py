"""A run taken over from a stalled trainer (the fake's claims take it as abandoned): each attempt
writes under its own claimed prefix, the stalled attempt's completion is refused and it announces
the run the taker recorded, so the record, its ``run.json`` and both announcements name the
taker's SavedModel, never a mix."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from screwops_contracts.datasets import Bucket
from screwops_contracts.runs import RunRecord
from screwops_trainer.params import TrainingParams
from screwops_trainer.service import OnEpoch
from screwops_trainer.store import run_id

from tests.unit.trainer.fakes import (
    PARAMS,
    Array,
    FakeFit,
    FakeTrained,
    Frames,
    Parts,
    validated,
)
from tests.unit.validation.builders import balanced


@dataclass
class Weighted(FakeTrained):
    """A fit whose SavedModel carries its replica's weights, so a mix of two shows."""

    weights: bytes = b""

    def save(self, directory: Path) -> Path:
        super().save(directory)
        (directory / "variables" / "variables.index").write_bytes(self.weights)
        return directory


@dataclass
class ReplicaFit(FakeFit):
    weights: bytes = b""

    def __call__(
        self,
        params: TrainingParams,
        train: tuple[Frames, Array],
        validation: tuple[Frames, Array],
        *,
        on_epoch: OnEpoch | None = None,
    ) -> FakeTrained:
        trained = super().__call__(params, train, validation, on_epoch=on_epoch)
        return Weighted(trained.history, trained.best_epoch, weights=self.weights)


async def test_a_run_taken_over_from_a_stalled_trainer_records_the_takers_model() -> None:
    first = Parts(fit=ReplicaFit(weights=b"first"))
    cause = await validated(first.objects, "screws", balanced(20))
    second = Parts(store=first.store, objects=first.objects, fit=ReplicaFit(weights=b"second"))
    started, overtaken = threading.Event(), threading.Event()

    def hold(epoch: int) -> None:
        # The first replica trains on until the second has finished and announced.
        started.set()
        assert overtaken.wait(timeout=10)

    first.fit.between_epochs = hold
    slow = asyncio.create_task(first.service().on_dataset_validated(cause))
    assert await asyncio.to_thread(started.wait, 10)
    fast = await second.service().on_dataset_validated(cause)
    overtaken.set()
    late = await slow

    run = run_id("screw-classifier", cause.payload.dataset_digest, PARAMS)
    record = first.store.runs[run]
    assert record.status == "finished"
    assert late == fast
    assert fast.artifact_key == record.artifact_key
    objects = first.objects.objects
    assert objects[(Bucket.MODELS, f"{record.artifact_key}/variables/variables.index")] == (
        b"second"
    )
    assert record.artifact_key == RunRecord.keys(run, 2)["artifact_key"]
    stored = json.loads(objects[(Bucket.MODELS, record.record_key)])
    assert stored["artifact_key"] == record.artifact_key
    assert stored["metrics"] == record.metrics
    assert json.loads(objects[(Bucket.MODELS, record.history_key)])["run_id"] == run
    # The overtaken attempt's SavedModel is its own, unreferenced, and nothing it wrote
    # replaced a byte of the recorded one.
    overtaken_key = RunRecord.keys(run, 1)["artifact_key"]
    assert objects[(Bucket.MODELS, f"{overtaken_key}/variables/variables.index")] == b"first"
    one, two = [*second.emitted, *first.emitted]
    assert one.event_id == two.event_id
    assert one.payload == two.payload
