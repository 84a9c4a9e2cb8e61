"""Trainer's domain logic: a validated dataset version in, a trained SavedModel and
``model.trained`` out.

``dataset.validated`` trains on the version it announces; ``training.requested`` on the version
it names, or on the newest version the trainer has seen validated. Each run's id is derived from
the model name, the data's digest and the params, so the same request twice is one run: a finished
run is reused (``model.trained`` with ``reused`` set, nothing retrained), while a run left
``running`` by a killed trainer is trained again when its event is delivered again.

A run goes: fetch the version's manifest, label set and split, check they hash to the announced
digest, fetch and decode the train and validation images and fit them to the model's frame (the
gateway's ``fit_frame``; the frame size is their most common side), record the run as
``running``, fit in a worker thread while each epoch's metrics reach MongoDB, write the
SavedModel, ``history.json`` and ``run.json`` to MinIO, record the run as ``finished`` and emit
``model.trained``. Before the artifacts are stored, the exported SavedModel scores the
validation split and the run's decision threshold is chosen on those scores
(:mod:`screwops_trainer.threshold`); it is recorded with the run and announced with the model's
kind.

Recording the run as ``running`` claims an attempt (a fenced claim, :mod:`screwops_storage.claims`:
the next number), and the attempt writes its artifacts under its own prefix
(``runs/<run>/attempts/<n>/``) once each, renewing its claim while it trains. A second delivery
of a run being trained (a rebalance) waits while the claim is alive; a run whose trainer is gone
or ran past ``max_run_s`` is taken over by a new attempt. Only the attempt holding the claim
writes epochs and completes the record, so an attempt that lost its claim stops before storing
its artifacts (or has its completion refused), its model is discarded (logged and counted in
``screwops_attempts_lost``), and it waits for the run as the attempt that took over records
it; the record, ``run.json`` and ``model.trained`` always name one attempt's SavedModel. The
event id derives from the cause, so a redelivered event announces the same run the same way.
The artifacts of attempts that lost are deleted by a periodic sweep
(:meth:`TrainerService.keep_sweeping`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import tempfile
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from PIL import Image
from pydantic import BaseModel
from screwops_bus import Emit
from screwops_contracts import (
    DatasetRejected,
    DatasetValidated,
    Event,
    ModelDegraded,
    TrainingRequested,
)
from screwops_contracts.datasets import (
    Bucket,
    LabelSet,
    Manifest,
    Split,
    SplitName,
    labels_key,
    manifest_key,
    parse_document,
)
from screwops_contracts.events import ModelTrained, ModelTrainedPayload
from screwops_contracts.models import DEFAULT_THRESHOLD
from screwops_contracts.runs import EpochRecord, RunRecord
from screwops_errors import (
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
)
from screwops_storage import ClaimLostError, Lease, claim_when_free, keep_sweeping
from screwops_telemetry.claims import ClaimMetrics

from screwops_trainer.config import Rules
from screwops_trainer.dataset import (
    Example,
    Images,
    Targets,
    arrays,
    check_digest,
    decoded,
    examples,
    frame_size,
)
from screwops_trainer.metrics import TrainerMetrics
from screwops_trainer.params import TrainingParams
from screwops_trainer.store import DatasetRecord, Objects, TrainerStore, run_id
from screwops_trainer.threshold import Scores, ThresholdError, choose_threshold

log = logging.getLogger("screwops.trainer")

D = TypeVar("D", bound=BaseModel)

EpochLogs = dict[str, float]
OnEpoch = Callable[[int, EpochLogs], None]
FED = (SplitName.TRAIN, SplitName.VALIDATION)
"""The splits a run is fed; the test split is the evaluator's alone."""


class Trained(Protocol):
    """What a fit gives back (:class:`screwops_trainer.model.Fitted`)."""

    @property
    def best_epoch(self) -> int: ...

    @property
    def seconds(self) -> float: ...

    def metrics(self) -> dict[str, float]: ...

    def save(self, directory: Path) -> Path: ...


class Fit(Protocol):
    """:func:`screwops_trainer.model.fit`: blocking, CPU-bound, calls ``on_epoch`` per epoch."""

    def __call__(
        self,
        params: TrainingParams,
        train: tuple[Images, Targets],
        validation: tuple[Images, Targets],
        *,
        on_epoch: OnEpoch | None = None,
    ) -> Trained: ...


class Score(Protocol):
    """:func:`screwops_trainer.scoring.score_saved_model`: blocking, one score per image."""

    def __call__(self, directory: Path, frames: Images) -> Scores: ...


class TrainingStoppedError(Exception):
    """Raised in the training thread at an epoch's end once its handler was cancelled."""


class EpochSink:
    """Carries each finished epoch from the training thread to MongoDB, in order.

    Keras calls it in the worker thread; the write is handed to the event loop
    (``run_coroutine_threadsafe``) and a lock keeps the writes in epoch order. A failed write is
    only logged: the per-epoch record shows progress, and the finished record is written whole
    from :attr:`epochs` anyway, so a database blip must not cost a training run.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        write: Callable[[EpochRecord], Awaitable[None]],
    ) -> None:
        self._loop = loop
        self._write = write
        self._lock = asyncio.Lock()
        self._pending: list[concurrent.futures.Future[None]] = []
        self._stopping = threading.Event()
        self.epochs: list[EpochRecord] = []

    def __call__(self, epoch: int, logs: EpochLogs) -> None:
        if self._stopping.is_set():
            raise TrainingStoppedError(f"stopped after epoch {epoch}")
        record = EpochRecord(epoch=epoch, metrics=logs, ended_at=datetime.now(UTC))
        self.epochs.append(record)
        self._pending.append(asyncio.run_coroutine_threadsafe(self._in_order(record), self._loop))

    def stop(self) -> None:
        """Make the training thread stop at the end of the current epoch."""
        self._stopping.set()

    async def drain(self) -> None:
        """Wait until every epoch handed over so far is written (or its failure logged)."""
        await asyncio.gather(*(asyncio.wrap_future(f) for f in self._pending))

    async def _in_order(self, record: EpochRecord) -> None:
        async with self._lock:
            try:
                await self._write(record)
            except Exception as error:  # progress only; see the class docstring
                log.warning("epoch %d not recorded yet: %r", record.epoch, error)


class TrainerService:
    """Trains validated versions (see the module docstring)."""

    def __init__(
        self,
        store: TrainerStore,
        objects: Objects,
        emit: Emit,
        fit: Fit,
        score: Score,
        *,
        rules: Rules,
        git_sha: str,
        packages: dict[str, str],
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._store = store
        self._objects = objects
        self._emit = emit
        self._fit = fit
        self._score = score
        self._model_name = rules.model_name
        self._params = rules.params
        self._model_kind = rules.model_kind
        self._threshold_rules = rules.threshold_rules
        self._git_sha = git_sha
        self._packages = dict(packages)
        self._concurrency = rules.concurrency
        self._frame_size = rules.frame_size
        self._claims = rules.claims
        self._sweep = rules.sweep
        # One run at a time per process: TensorFlow's threads are bounded for one run, and a
        # second event for the same run waits here and then finds it finished.
        self._training = asyncio.Lock()
        self._tracer = trace.get_tracer("screwops.trainer", tracer_provider=tracer_provider)
        self._metrics = TrainerMetrics(meter_provider)
        self._claim_metrics = ClaimMetrics("trainer", meter_provider)

    async def on_dataset_validated(self, event: DatasetValidated) -> ModelTrainedPayload:
        """Record the version as validated and train on it.

        Raises:
            NotFoundError, InvalidInputError, IntegrityError: the version's documents or images
                are missing, malformed or not what validation announced.
            TransientError: MinIO or MongoDB did not answer (the bus retries).
        """
        dataset = DatasetRecord.validated(event)
        await self._store.record_dataset(dataset)
        return await self._train(dataset, self._model_name, event)

    async def on_dataset_rejected(self, event: DatasetRejected) -> None:
        """Record the version as rejected, so a request to train on it is refused."""
        dataset = DatasetRecord.rejected(event)
        await self._store.record_dataset(dataset)
        log.info(
            "%s v%d rejected by validation: %s",
            dataset.dataset_id,
            dataset.version,
            "; ".join(dataset.failures),
        )

    def on_model_degraded(self, event: ModelDegraded) -> None:
        """Log the degradation, so the trainer's log says why the run that follows was asked
        for. It starts nothing itself: the monitor sends ``training.requested`` beside it, under
        its cooldown, and training on both would run twice."""
        payload = event.payload
        log.warning(
            "%s version %d degraded: %s %.4g past %.4g over %d observations",
            payload.model_name,
            payload.model_version,
            payload.signal,
            payload.value,
            payload.threshold,
            payload.window,
        )

    async def on_training_requested(self, event: TrainingRequested) -> ModelTrainedPayload:
        """Train on the version asked for, or on the newest validated one.

        Raises:
            InvalidInputError: the request names a model this trainer does not train.
            NotFoundError: the trainer has seen no validated version to train on.
            FailedPreconditionError: the version asked for was rejected by validation.
        """
        payload = event.payload
        if payload.model_name != self._model_name:
            raise InvalidInputError(
                f"this trainer trains {self._model_name!r}, not {payload.model_name!r}"
            )
        dataset = await self._choose(payload.dataset_id, payload.dataset_version)
        log.info(
            "training %s on %s v%d, requested by %s: %s",
            payload.model_name,
            dataset.dataset_id,
            dataset.version,
            payload.requested_by,
            payload.reason,
        )
        return await self._train(dataset, payload.model_name, event)

    async def _choose(self, dataset_id: str, version: int | None) -> DatasetRecord:
        if version is None:
            newest = await self._store.newest_validated(dataset_id)
            if newest is None:
                raise NotFoundError(f"no validated version of dataset {dataset_id!r} is known")
            return newest
        dataset = await self._store.dataset(dataset_id, version)
        if dataset is None:
            raise NotFoundError(
                f"{dataset_id} v{version} has not been validated (no dataset.validated seen)"
            )
        if dataset.status == "rejected":
            raise FailedPreconditionError(
                f"{dataset_id} v{version} was rejected by validation and is not trained on: "
                + "; ".join(dataset.failures)
            )
        return dataset

    async def _train(
        self, dataset: DatasetRecord, model_name: str, cause: Event[Any]
    ) -> ModelTrainedPayload:
        if dataset.dataset_digest is None or dataset.split_key is None:
            raise FailedPreconditionError(
                f"{dataset.dataset_id} v{dataset.version} has no digest or split"
            )
        run = run_id(model_name, dataset.dataset_digest, self._params)
        record = await self._store.run(run)
        if record is None or record.status != "finished":
            async with self._training:
                record = await self._store.run(run)
                if record is None or record.status != "finished":
                    record = await self._run(run, dataset, model_name, cause)
        # Reused unless this very event trained it (then a redelivery re-announces the same run).
        reused = record.cause_event_id != str(cause.event_id)
        payload = ModelTrainedPayload(
            model_name=model_name,
            run_id=run,
            dataset_id=dataset.dataset_id,
            dataset_version=dataset.version,
            dataset_digest=dataset.dataset_digest,
            artifact_key=record.artifact_key,
            metrics=record.metrics,
            reused=reused,
            # A run finished before thresholds were chosen was judged and served at 0.5.
            threshold=DEFAULT_THRESHOLD if record.threshold is None else record.threshold,
            model_kind=record.model_kind,
            frame_size=record.frame_size,
        )
        await self._emit(ModelTrained, payload, cause=cause)
        self._metrics.answered("reused" if reused else "trained")
        log.info("%s: %s on %s", run, "reused" if reused else "trained", dataset.key)
        return payload

    async def keep_sweeping(self) -> None:
        """Every sweep interval, delete the artifacts of attempts that lost (see the module
        docstring); runs until cancelled."""
        await keep_sweeping(self.sweep, interval_s=self._sweep.interval_s)

    async def sweep(self) -> list[str]:
        """Delete the artifacts of attempts that lost, older than the minimum age: their keys."""
        swept = await self._store.sweep_attempts(self._objects, min_age_s=self._sweep.min_age_s)
        self._claim_metrics.swept(len(swept))
        return swept

    async def _run(
        self, run: str, dataset: DatasetRecord, model_name: str, cause: Event[Any]
    ) -> RunRecord:
        rows, inputs = await self._load(dataset)
        size = self._frame_size or frame_size(
            [inputs[r.sha256] for r in rows if r.split is SplitName.TRAIN]
        )
        train = await asyncio.to_thread(arrays, rows, inputs, SplitName.TRAIN, size)
        validation = await asyncio.to_thread(arrays, rows, inputs, SplitName.VALIDATION, size)
        record = RunRecord(
            run_id=run,
            model_name=model_name,
            status="running",
            params=self._params.model_dump(mode="json"),
            seed=self._params.seed,
            git_sha=self._git_sha,
            packages=self._packages,
            dataset_id=dataset.dataset_id,
            dataset_version=dataset.version,
            dataset_digest=str(dataset.dataset_digest),
            split_key=str(dataset.split_key),
            split_counts={
                SplitName.TRAIN.value: len(train[1]),
                SplitName.VALIDATION.value: len(validation[1]),
            },
            model_kind=self._model_kind,
            frame_size=size,
            cause_event_id=str(cause.event_id),
            correlation_id=cause.correlation_id,
            started_at=datetime.now(UTC),
            **RunRecord.keys(run),
        )
        while True:
            started = await claim_when_free(
                functools.partial(self._store.start_run, record, times=self._claims),
                times=self._claims,
                name=f"run {run}",
            )
            if started.status == "finished":
                return started
            try:
                return await self._attempt(started, dataset, train, validation)
            except ClaimLostError as lost:
                self._claim_metrics.lost()
                log.warning("%s: its model is discarded; the run is the taker's", lost)

    async def _attempt(
        self,
        started: RunRecord,
        dataset: DatasetRecord,
        train: tuple[Images, Targets],
        validation: tuple[Images, Targets],
    ) -> RunRecord:
        """Train attempt ``started.attempts`` and store it while it holds its claim.

        Raises:
            ClaimLostError: another attempt took the run over; nothing is recorded.
        """
        log.info(
            "%s: training %s on %s (attempt %d, %d train / %d validation images)",
            started.run_id,
            started.model_name,
            dataset.key,
            started.attempts,
            len(train[1]),
            len(validation[1]),
        )
        renew = functools.partial(self._store.renew_run, started.run_id, started.attempts)
        name = f"run {started.run_id} attempt {started.attempts}"
        async with Lease(renew, interval_s=self._claims.heartbeat_s, name=name) as lease:
            with self._tracer.start_as_current_span(
                "trainer.fit", attributes={"run_id": started.run_id, "attempt": started.attempts}
            ):
                trained, epochs = await self._fit_in_thread(started, train, validation)
            self._metrics.fitted(trained.seconds)
            lease.check()
            return await self._store_artifacts(started, trained, epochs, validation, lease)

    async def _fit_in_thread(
        self,
        started: RunRecord,
        train: tuple[Images, Targets],
        validation: tuple[Images, Targets],
    ) -> tuple[Trained, list[EpochRecord]]:
        async def write(epoch: EpochRecord) -> None:
            await self._store.append_epoch(started.run_id, started.attempts, epoch)

        sink = EpochSink(asyncio.get_running_loop(), write)
        try:
            trained = await asyncio.to_thread(
                self._fit, self._params, train, validation, on_epoch=sink
            )
        except asyncio.CancelledError:
            # Shutting down: the thread stops at the epoch's end; the record stays "running",
            # and the event, not committed, is delivered again and trains the run again.
            sink.stop()
            raise
        except Exception as error:
            await sink.drain()
            await self._fail(started, sink.epochs, repr(error))
            raise
        await sink.drain()
        return trained, sink.epochs

    async def _fail(self, started: RunRecord, epochs: list[EpochRecord], error: str) -> None:
        self._metrics.answered("failed")
        await self._store.finish_run(
            started.model_copy(
                update={
                    "status": "failed",
                    "epochs": epochs,
                    "error": error[:2000],
                    "finished_at": datetime.now(UTC),
                }
            )
        )

    async def _store_artifacts(
        self,
        started: RunRecord,
        trained: Trained,
        epochs: list[EpochRecord],
        validation: tuple[Images, Targets],
        lease: Lease,
    ) -> RunRecord:
        with tempfile.TemporaryDirectory(prefix=f"{started.run_id}-") as scratch:
            directory = Path(scratch) / "saved_model"
            await asyncio.to_thread(trained.save, directory)
            scores = await asyncio.to_thread(self._score, directory, validation[0])
            try:
                point = choose_threshold(
                    scores,
                    validation[1],
                    self._model_kind,
                    **self._threshold_rules.model_dump(),
                )
            except ThresholdError as error:
                await self._fail(started, epochs, f"no threshold: {error.message}")
                raise
            finished = started.model_copy(
                update={
                    "status": "finished",
                    "epochs": epochs,
                    "metrics": {**trained.metrics(), **point.metrics()},
                    "best_epoch": trained.best_epoch,
                    "training_seconds": round(trained.seconds, 3),
                    "threshold": point.threshold,
                    "finished_at": datetime.now(UTC),
                }
            )
            log.info(
                "%s: threshold %.4f (%s; validation false rejects %.4f, recall %s)",
                started.run_id,
                point.threshold,
                point.kind,
                point.false_reject_rate,
                "n/a" if point.recall is None else f"{point.recall:.4f}",
            )
            lease.check()
            await self._objects.put_directory(
                Bucket.MODELS, directory, prefix=finished.artifact_key
            )
        await self._put_json(finished.history_key, history(finished))
        await self._put_json(finished.record_key, finished.model_dump(mode="json"))
        lease.check()
        if not await self._store.finish_run(finished):
            raise ClaimLostError(f"run {started.run_id} attempt {started.attempts}: taken over")
        return finished

    async def _put_json(self, key: str, value: Any) -> None:
        await self._objects.put_once(
            Bucket.MODELS,
            key,
            json.dumps(value, sort_keys=True, indent=2).encode(),
            content_type="application/json",
        )

    async def _load(self, dataset: DatasetRecord) -> tuple[list[Example], dict[str, Image.Image]]:
        """The version's rows, checked against its digest, and the fed images, decoded."""
        split = await self._document(Split, str(dataset.split_key))
        if (split.dataset_id, split.version) != (dataset.dataset_id, dataset.version):
            raise InvalidInputError(
                f"{dataset.split_key} is the split of {split.dataset_id} v{split.version}, "
                f"not of {dataset.dataset_id} v{dataset.version}"
            )
        manifest = await self._document(Manifest, manifest_key(dataset.dataset_id, dataset.version))
        labels = await self._document(LabelSet, labels_key(dataset.dataset_id, dataset.version))
        rows = examples(manifest, labels, split)
        check_digest(rows, str(dataset.dataset_digest), where=dataset.key)
        slots = asyncio.Semaphore(self._concurrency)

        async def one(row: Example) -> tuple[str, Image.Image]:
            async with slots:
                data = await self._objects.get_verified(Bucket.IMAGES, row.key, sha256=row.sha256)
                return row.sha256, await asyncio.to_thread(decoded, data)

        fed = await asyncio.gather(*(one(row) for row in rows if row.split in FED))
        return rows, dict(fed)

    async def _document(self, model: type[D], key: str) -> D:
        return parse_document(model, key, await self._objects.get_verified(Bucket.DATASETS, key))


def history(record: RunRecord) -> dict[str, Any]:
    """``history.json``: the run's per-epoch metrics and the epoch whose weights were kept."""
    return {
        "run_id": record.run_id,
        "model_name": record.model_name,
        "params": record.params,
        "dataset_digest": record.dataset_digest,
        "best_epoch": record.best_epoch,
        "metrics": record.metrics,
        "training_seconds": record.training_seconds,
        "epochs": [{"epoch": e.epoch, **e.metrics} for e in record.epochs],
    }


__all__ = [
    "FED",
    "EpochSink",
    "Fit",
    "Score",
    "Trained",
    "TrainerService",
    "TrainingStoppedError",
    "history",
]
