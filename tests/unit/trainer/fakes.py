"""In-memory stand-ins for the trainer's store, emit and the network's fit (unit tests only).

The fake fit calls ``on_epoch`` from the worker thread the service runs it in, as Keras does, so
the hand-over of epochs to the event loop is exercised for real; it never imports TensorFlow.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from screwops_bus import Emit
from screwops_contracts import (
    DatasetLabeled,
    DatasetRejected,
    DatasetRejectedPayload,
    DatasetValidated,
)
from screwops_contracts.models import ModelKind
from screwops_contracts.runs import EpochRecord, RunRecord
from screwops_storage import ClaimTimes, Held
from screwops_storage.claims import AttemptObjects
from screwops_trainer.config import Rules
from screwops_trainer.params import TrainingParams
from screwops_trainer.service import OnEpoch, TrainerService
from screwops_trainer.store import DatasetRecord
from screwops_validation.config import Rules as ValidationRules
from screwops_validation.service import ValidationService

from tests.fakes import FakeObjects, RecordingBus
from tests.unit.validation.builders import File, stage_version
from tests.unit.validation.fakes import FakeStore as ValidationStore

Array = npt.NDArray[np.float32]
Frames = npt.NDArray[np.uint8]

PARAMS = TrainingParams(epochs=3, filters=(4,))
PACKAGES = {"tensorflow": "2.x", "keras": "3.x", "numpy": "1.x", "screwops-trainer": "0.1.0"}


def running_record(run: str) -> RunRecord:
    """A run's record as a start writes it, before its attempt is claimed."""
    return RunRecord(
        run_id=run,
        model_name="screws",
        status="running",
        params={},
        seed=1,
        git_sha="abc",
        packages={},
        dataset_id="screws",
        dataset_version=1,
        dataset_digest="d",
        split_key="screws/v1/split.json",
        split_counts={},
        cause_event_id="c",
        correlation_id="c",
        started_at=datetime.now(UTC),
        **RunRecord.keys(run),
    )


class FakeStore:
    """:class:`TrainerStore` in memory, with the fenced claim of runs the Mongo filters enforce:
    only the latest attempt, while running, writes epochs or completes the record."""

    def __init__(self) -> None:
        self.datasets: dict[str, DatasetRecord] = {}
        self.runs: dict[str, RunRecord] = {}
        self.appended: list[tuple[str, int, int]] = []
        self.epochs_at_finish: list[int] = []
        self.live: set[str] = set()
        """Runs a live attempt trains: a start is held."""

    async def ensure_indexes(self) -> None:
        return None

    async def record_dataset(self, record: DatasetRecord) -> None:
        self.datasets[record.key] = record

    async def dataset(self, dataset_id: str, version: int) -> DatasetRecord | None:
        return self.datasets.get(f"{dataset_id}@v{version}")

    async def newest_validated(self, dataset_id: str) -> DatasetRecord | None:
        found = [
            d
            for d in self.datasets.values()
            if d.dataset_id == dataset_id and d.status == "validated"
        ]
        return max(found, key=lambda d: d.version, default=None)

    async def run(self, run: str) -> RunRecord | None:
        return self.runs.get(run)

    async def start_run(self, record: RunRecord, *, times: ClaimTimes) -> RunRecord | Held:
        """As the fenced claim: a finished run is answered as it is, a running one in
        :attr:`live` is held, any other (left running by a trainer that is gone, or failed)
        is started with the next number."""
        previous = self.runs.get(record.run_id)
        if previous is not None and previous.status == "finished":
            return previous
        if previous is not None and previous.status == "running" and record.run_id in self.live:
            return Held(previous.attempts)
        attempt = (previous.attempts if previous else 0) + 1
        started = record.model_copy(
            update={
                "status": "running",
                "epochs": [],
                "error": None,
                "finished_at": None,
                "attempts": attempt,
                **RunRecord.keys(record.run_id, attempt),
            }
        )
        self.runs[record.run_id] = started
        return started

    async def renew_run(self, run: str, attempt: int) -> bool:
        stored = self.runs.get(run)
        return stored is not None and stored.attempts == attempt and stored.status == "running"

    async def append_epoch(self, run: str, attempt: int, epoch: EpochRecord) -> None:
        # Yield a few times, as a round trip to the server would, so writes could interleave.
        for _ in range(3):
            await asyncio.sleep(0)
        self.appended.append((run, attempt, epoch.epoch))
        record = self.runs.get(run)
        if record is not None and record.attempts == attempt and record.status == "running":
            self.runs[run] = record.model_copy(update={"epochs": [*record.epochs, epoch]})

    async def finish_run(self, record: RunRecord) -> bool:
        self.epochs_at_finish.append(len([a for a in self.appended if a[0] == record.run_id]))
        if not await self.renew_run(record.run_id, record.attempts):
            return False
        self.runs[record.run_id] = record
        return True

    async def sweep_attempts(self, objects: AttemptObjects, *, min_age_s: float) -> list[str]:
        raise NotImplementedError("the sweep's decisions are tested on MongoTrainerStore")


@dataclass
class FakeTrained:
    """What the fake fit returns: :class:`screwops_trainer.model.Fitted`'s shape."""

    history: list[dict[str, float]]
    best_epoch: int
    seconds: float = 0.5

    def metrics(self) -> dict[str, float]:
        return {**self.history[self.best_epoch - 1], "best_epoch": float(self.best_epoch)}

    def save(self, directory: Path) -> Path:
        (directory / "variables").mkdir(parents=True)
        (directory / "saved_model.pb").write_bytes(b"graph")
        (directory / "variables" / "variables.index").write_bytes(b"weights")
        return directory


@dataclass
class Call:
    params: TrainingParams
    train: tuple[Frames, Array]
    validation: tuple[Frames, Array]
    thread: str


@dataclass
class FakeFit:
    """Records what it was fed and reports ``params.epochs`` epochs from its worker thread.

    ``fail_at`` raises at that epoch; ``between_epochs`` runs after each (a test's hook).
    """

    calls: list[Call] = field(default_factory=list)
    fail_at: int | None = None
    between_epochs: Callable[[int], object] | None = None
    ended: threading.Event = field(default_factory=threading.Event)

    def __call__(
        self,
        params: TrainingParams,
        train: tuple[Frames, Array],
        validation: tuple[Frames, Array],
        *,
        on_epoch: OnEpoch | None = None,
    ) -> FakeTrained:
        self.calls.append(Call(params, train, validation, threading.current_thread().name))
        history = []
        try:
            for epoch in range(1, params.epochs + 1):
                if epoch == self.fail_at:
                    raise RuntimeError(f"diverged at epoch {epoch}")
                logs = {"loss": 1.0 / epoch, "accuracy": 0.5 + epoch / 10, "val_loss": 1.1 / epoch}
                logs["val_accuracy"] = 0.5 + epoch / 20
                history.append(logs)
                if on_epoch is not None:
                    on_epoch(epoch, logs)
                if self.between_epochs is not None:
                    self.between_epochs(epoch)
        finally:
            self.ended.set()
        return FakeTrained(history, best_epoch=len(history))


@dataclass
class FakeScore:
    """Scores the exported model as :func:`score_saved_model` would: spread evenly over [0, 1]
    in the order the frames come, after checking a SavedModel was written where it looks."""

    calls: list[tuple[Path, Frames]] = field(default_factory=list)

    def __call__(self, directory: Path, frames: Frames) -> Array:
        assert (directory / "saved_model.pb").is_file()
        self.calls.append((directory, frames))
        return np.linspace(0.0, 1.0, len(frames), dtype=np.float32)


@dataclass
class Parts:
    store: FakeStore = field(default_factory=FakeStore)
    objects: FakeObjects = field(default_factory=FakeObjects)
    emitted: RecordingBus = field(default_factory=lambda: RecordingBus("trainer"))
    fit: FakeFit = field(default_factory=FakeFit)
    score: FakeScore = field(default_factory=FakeScore)
    params: TrainingParams = PARAMS
    model_kind: ModelKind = ModelKind.SUPERVISED
    frame_size: int = 0
    emit: Emit | None = None  # a real bus's, as in __main__; else into ``emitted``

    def service(self) -> TrainerService:
        return TrainerService(
            self.store,
            self.objects,
            self.emit or self.emitted.emit,
            self.fit,
            self.score,
            rules=Rules(
                model_name="screw-classifier",
                params=self.params,
                model_kind=self.model_kind,
                concurrency=4,
                frame_size=self.frame_size,
            ),
            git_sha="0123abc",
            packages=PACKAGES,
        )


async def validated(
    objects: FakeObjects, dataset_id: str, files: list[File], *, version: int = 1
) -> DatasetValidated:
    """Stage a labeled version and run the real validation on it: its split and its event."""
    cause: DatasetLabeled = await stage_version(objects, dataset_id, files, version=version)
    emitted = RecordingBus("validation")
    service = ValidationService(
        ValidationStore(), objects, emitted.emit, rules=ValidationRules(concurrency=4)
    )
    await service.on_dataset_labeled(cause)
    [event] = emitted
    assert isinstance(event, DatasetValidated), event
    return event


def rejected(dataset_id: str, version: int) -> DatasetRejected:
    return DatasetRejected.origin(
        DatasetRejectedPayload.model_validate(
            {
                "dataset_id": dataset_id,
                "version": version,
                "failures": [
                    {
                        "name": "min_images_per_class",
                        "passed": False,
                        "observed": 5,
                        "expected": ">= 20 per class",
                        "message": "class 'bad' has 5",
                    }
                ],
                "report_key": f"{dataset_id}/v{version}/validation/report.json",
            }
        ),
        producer="validation",
    )
