"""The evaluator's domain logic: a trained run in, a verdict with its numbers out.

On ``model.trained`` the run's dataset version is read (manifest, label set and validation's
split, from the datasets bucket) and its test split fetched, decoded and fitted to the candidate's
frame size with ``screwops_imaging.fit_frame`` exactly as the trainer and the gateway do (the
model finds and aligns the screw itself). The candidate's SavedModel is then served by the real
Triton under the staging name (infra validation: it loads, answers a warm-up inference, and
scores the whole test split), and removed again. A test image in which the model finds no screw
counts as a defect verdict at probability 1.0 (the line rejects a part the model cannot find);
how many there were is logged and reported (``infra.no_part_images``, metric
``no_part_images``). A candidate from before frame input (frame size 0) cannot be served and
fails infra validation, saying it must be retrained. The scores become metrics and the
gate's checks, the model in production is scored on the same images for comparison, and the
verdict is written (a JSON report in MinIO, a record in MongoDB) and announced: ``model.approved``
for the registry to deploy, or ``model.rejected`` with every check and its numbers.

The candidate is judged at the threshold its run chose on the validation split (announced in
``model.trained``), and production at its own (announced in ``model.deployed`` /
``model.rolled_back``): each at the threshold the gateway applies to it, so the comparison is
between what the line would see from either. The test split never chooses a threshold.

The evaluation id is derived from the run, so a run is judged once: a redelivered (or re-sent)
``model.trained`` finds the record and announces the same verdict again, with an event id derived
from its cause like every emitted event. An evaluation is claimed in MongoDB before anything is
written (:mod:`screwops_storage.claims`): the claim's attempt number names the attempt's report
(``evaluations/<id>/attempts/<n>.json``, written once), and the attempt renews its claim while it
runs. A second delivery (a rebalance) waits while the claim is alive; one whose worker is gone or
ran past ``max_run_s`` is taken over by a new attempt with the next number, so its report never
meets another attempt's bytes, and the attempt it was taken from, should it still be running,
stops at its next step and writes nothing: only the attempt holding the claim completes the
record, so its verdict is discarded (logged and counted in ``screwops_attempts_lost``). The
recorded report is then copied to ``evaluations/<id>.json``, where the monitor finds it from the
run alone; only holders of the complete record write that key, always with the recorded report's
bytes. Reports of attempts that lost are deleted by a periodic sweep
(:meth:`EvaluatorService.keep_sweeping`).

The production version is learnt from the registry's ``model.deployed`` and
``model.rolled_back`` events and kept in the evaluator's own collection; the evaluator never
reads the registry's.

Nothing here imports a broker, driver or gRPC: the store, the object store, Triton and the bus
come in as the interfaces below.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel
from screwops_bus import Emit
from screwops_contracts import (
    AssertionResult,
    Event,
    ModelApproved,
    ModelApprovedPayload,
    ModelDeployed,
    ModelRejected,
    ModelRejectedPayload,
    ModelRolledBack,
)
from screwops_contracts.datasets import (
    Bucket,
    LabelSet,
    Manifest,
    Split,
    SplitName,
    check_version,
    labeled_split,
    labels_key,
    manifest_key,
    parse_document,
    split_key,
)
from screwops_contracts.events import ModelTrained, ModelTrainedPayload
from screwops_contracts.models import evaluation_id_of, frame_size_problem
from screwops_errors import (
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
)
from screwops_imaging import decode, fit_frame
from screwops_metrics import LabeledImage, Probabilities, SplitMetrics, compute_metrics
from screwops_storage import ClaimLostError, Lease, claim_when_free, keep_sweeping
from screwops_telemetry.claims import ClaimMetrics

from screwops_evaluator.config import Rules
from screwops_evaluator.gate import INFRA_VALIDATION, Comparison, check_infra, judge
from screwops_evaluator.metrics import EvaluatorMetrics
from screwops_evaluator.report import (
    Champion as ChampionSummary,
)
from screwops_evaluator.report import (
    EvaluationReport,
    ImageScore,
    InfraValidation,
    report_attempt,
    report_key,
)
from screwops_evaluator.staging import (
    Frames,
    Staged,
    StagingArea,
    Unservable,
    score,
    staging_version,
)
from screwops_evaluator.store import Champion, EvaluationRecord, EvaluatorStore, Objects

log = logging.getLogger("screwops.evaluator")

D = TypeVar("D", bound=BaseModel)

__all__ = [
    "EvaluatorService",
    "evaluation_id_of",
    "held_out_images",
]


def held_out_images(manifest: Manifest, labels: LabelSet, split: Split) -> list[LabeledImage]:
    """The test split's images with their (first) label, by sha256.

    The defect type is the label's, else the import layout's (an MVTec folder name).

    Raises:
        InvalidInputError: the documents are of different versions, the split names an image the
            manifest or the label set lacks, or the test split is empty.
    """
    chosen = [
        LabeledImage(row.sha256, row.image.key, row.label, row.defect_type or row.image.defect_type)
        for row in labeled_split(manifest, labels, split, splits={SplitName.TEST})
    ]
    if not chosen:
        raise InvalidInputError(f"the test split of {split.dataset_id} v{split.version} is empty")
    return chosen


def frame(data: bytes, frame_size: int) -> Frames:
    """The model's input for one stored image: decoded and fitted to its frame as the trainer
    and the gateway do."""
    return fit_frame(decode(data).image, frame_size)


class EvaluatorService:
    """Judges trained runs and follows production (see the module docstring)."""

    def __init__(
        self,
        store: EvaluatorStore,
        objects: Objects,
        staging: StagingArea,
        emit: Emit,
        *,
        rules: Rules,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._store = store
        self._objects = objects
        self._staging = staging
        self._emit = emit
        self._gate = rules.gate
        self._concurrency = rules.concurrency
        self._claims = rules.claims
        self._sweep = rules.sweep
        # One evaluation at a time per process: the machine's cores go to Triton scoring one
        # model, and a second event for the same run waits here and then finds it judged.
        self._evaluating = asyncio.Lock()
        self._tracer = trace.get_tracer("screwops.evaluator", tracer_provider=tracer_provider)
        self._metrics = EvaluatorMetrics(meter_provider)
        self._claim_metrics = ClaimMetrics("evaluator", meter_provider)

    # --- events ----------------------------------------------------------------------------

    async def on_model_trained(self, event: ModelTrained) -> EvaluationRecord | None:
        """Judge the run ``event`` announces, store the verdict and announce it; None when this
        attempt lost its claim to a later one (which announces the verdict).

        A candidate that cannot be served is rejected (an outcome, not an error).

        Raises:
            NotFoundError: the version's documents or test images are missing.
            InvalidInputError: the documents are malformed or disagree with each other.
            TransientError: MinIO, MongoDB or Triton did not answer (the bus retries).
        """
        trained = event.payload
        evaluation_id = evaluation_id_of(trained.model_name, trained.run_id)
        async with self._evaluating:
            claimed: int | EvaluationRecord = await claim_when_free(
                functools.partial(
                    self._store.claim_evaluation,
                    evaluation_id,
                    trained.model_name,
                    trained.run_id,
                    times=self._claims,
                ),
                times=self._claims,
                name=evaluation_id,
            )
            if isinstance(claimed, EvaluationRecord):
                verdict = "approved" if claimed.passed else "rejected"
                log.info("run %s was %s before; announcing it again", trained.run_id, verdict)
                await self._publish(claimed)
                await self._announce(claimed, event)
                return claimed
            began = time.perf_counter()
            renew = functools.partial(self._store.renew_evaluation, evaluation_id, claimed)
            name = f"evaluation {evaluation_id} attempt {claimed}"
            try:
                async with Lease(renew, interval_s=self._claims.heartbeat_s, name=name) as lease:
                    record = await self._evaluate(event, evaluation_id, claimed, lease)
            except ClaimLostError as lost:
                self._claim_metrics.lost()
                log.warning("%s: its verdict is discarded", lost)
                return None
            await self._publish(record)
            await self._announce(record, event)
        served = not any(c.name == INFRA_VALIDATION and not c.passed for c in record.checks)
        self._metrics.judged(
            passed=record.passed, served=served, seconds=time.perf_counter() - began
        )
        failed = [c.name for c in record.checks if not c.passed]
        log.info("run %s of %s: %s", trained.run_id, trained.model_name, failed or "approved")
        return record

    async def on_model_deployed(self, event: ModelDeployed) -> None:
        """Follow production: the deployed version is what candidates are compared with now."""
        deployed = event.payload
        await self._store.record_served_run(deployed.model_name, deployed.version, deployed.run_id)
        await self._follow(
            event,
            deployed.model_name,
            deployed.version,
            deployed.triton_model,
            deployed.run_id,
            deployed.threshold,
            deployed.frame_size,
        )

    async def on_model_rolled_back(self, event: ModelRolledBack) -> None:
        """Follow production back to the version a rollback returned to."""
        rolled = event.payload
        run_id = await self._store.served_run(rolled.model_name, rolled.to_version)
        await self._follow(
            event,
            rolled.model_name,
            rolled.to_version,
            rolled.triton_model,
            run_id,
            rolled.threshold,
            rolled.frame_size,
        )

    # --- the steps -------------------------------------------------------------------------

    async def _follow(
        self,
        event: Event[Any],
        model_name: str,
        version: int,
        triton_model: str,
        run_id: str | None,
        threshold: float,
        frame_size: int,
    ) -> None:
        champion = Champion(
            model_name=model_name,
            version=version,
            triton_model=triton_model,
            run_id=run_id,
            since=_millis(event.occurred_at),
            event_id=str(event.event_id),
            threshold=threshold,
            frame_size=frame_size,
        )
        if await self._store.set_champion(champion):
            log.info("production of %s is version %d (%s)", model_name, version, event.type)
        else:
            log.info(
                "ignoring %s of %s version %d: a later move is known",
                event.type,
                model_name,
                version,
            )

    async def keep_sweeping(self) -> None:
        """Every sweep interval, delete the reports of attempts that lost (see the module
        docstring); runs until cancelled."""
        await keep_sweeping(self.sweep, interval_s=self._sweep.interval_s)

    async def sweep(self) -> list[str]:
        """Delete the reports of attempts that lost, older than the minimum age: their keys."""
        swept = await self._store.sweep_attempts(
            self._objects, report_attempt, min_age_s=self._sweep.min_age_s
        )
        self._claim_metrics.swept(len(swept))
        return swept

    async def _evaluate(
        self, event: ModelTrained, evaluation_id: str, attempt: int, lease: Lease
    ) -> EvaluationRecord:
        """Attempt ``attempt`` at the evaluation, checking before each step that it still
        holds its claim: the record as completed.

        Raises:
            ClaimLostError: another attempt took the claim over; nothing is recorded.
        """
        trained = event.payload
        images = await self._held_out_images(trained.dataset_id, trained.dataset_version)
        servable = frame_size_problem(trained.frame_size) is None
        inputs = await self._inputs(images, trained.frame_size) if servable else None
        lease.check()
        staged, infra = await self._infra_validation(trained, evaluation_id, inputs)
        lease.check()
        verdict = await self._judge(trained, images, inputs, staged, infra)
        now = _millis(datetime.now(UTC))
        report = self._report(
            event,
            evaluation_id,
            now,
            verdict,
            infra,
            _image_scores(images, staged, verdict.champion_scores),
        )
        key = report_key(evaluation_id, attempt)
        lease.check()
        await self._objects.put_once(
            Bucket.MODELS,
            key,
            json.dumps(report.model_dump(mode="json"), sort_keys=True, indent=2).encode(),
            content_type="application/json",
        )
        record = _record(event, evaluation_id, now, verdict, key)
        lease.check()
        if not await self._store.complete_evaluation(record, attempt):
            raise ClaimLostError(f"evaluation {evaluation_id} attempt {attempt}: taken over")
        return record

    async def _publish(self, record: EvaluationRecord) -> None:
        """Copy the recorded report to the evaluation's fixed key (see the module docstring);
        a record from before attempts were kept apart is there already."""
        fixed = report_key(record.evaluation_id)
        if record.report_key != fixed:
            data = await self._objects.get_verified(Bucket.MODELS, record.report_key)
            await self._objects.put_named(
                Bucket.MODELS, fixed, data, content_type="application/json"
            )

    async def _infra_validation(
        self, trained: ModelTrainedPayload, evaluation_id: str, inputs: Frames | None
    ) -> tuple[Staged | None, InfraValidation]:
        """The candidate served under the staging name and scored on ``inputs``, or why it could
        not be: that is an outcome to report, not an error. No ``inputs``: its frame size says
        it cannot take frames."""
        version = staging_version(evaluation_id)
        with self._tracer.start_as_current_span(
            "evaluator.infra_validation",
            attributes={
                "screwops.run_id": trained.run_id,
                "screwops.images": 0 if inputs is None else len(inputs),
            },
        ):
            try:
                if inputs is None:
                    raise Unservable(
                        f"frame size {trained.frame_size}: {frame_size_problem(trained.frame_size)}"
                    )
                staged: Staged | None = await self._staging.serve_and_score(
                    trained.artifact_key, version, trained.frame_size, inputs
                )
                failure = None
            except Unservable as unservable:
                staged, failure = None, unservable.reason
                log.warning("run %s cannot be served: %s", trained.run_id, failure)
        if staged is not None and staged.scored.no_part:
            log.warning(
                "run %s found no screw in %d of %d test images: each counted as a defect",
                trained.run_id,
                staged.scored.no_part,
                len(staged.scored.probabilities),
            )
        infra = InfraValidation(
            triton_model=self._staging.staging.model,
            version=version,
            served=staged is not None,
            check_probability=staged.check_probability if staged else None,
            frame_size=trained.frame_size,
            no_part_images=staged.scored.no_part if staged else None,
            failure=failure,
            load_seconds=staged.load_seconds if staged else None,
            scoring_seconds=staged.scoring_seconds if staged else None,
        )
        return staged, infra

    async def _judge(
        self,
        trained: ModelTrainedPayload,
        images: Sequence[LabeledImage],
        inputs: Frames | None,
        staged: Staged | None,
        infra: InfraValidation,
    ) -> _Verdict:
        """The gate's checks; a candidate that served is scored and compared with production,
        one that did not fails infra validation alone."""
        infra_check = check_infra(
            infra.triton_model,
            infra.version,
            probability=infra.check_probability,
            failure=infra.failure,
        )
        if staged is None or inputs is None:
            return _Verdict([infra_check])
        candidate = compute_metrics(
            images, staged.scored.probabilities, threshold=trained.threshold
        )
        champion, champion_scores = await self._champion(
            trained.model_name, images, inputs, trained.frame_size
        )
        comparison = (
            Comparison()
            if champion is None
            else Comparison(champion.version, champion.metrics, champion.skipped)
        )
        checks = judge(infra_check, candidate, comparison, self._gate)
        return _Verdict(checks, candidate, champion, champion_scores, staged.scored.no_part)

    def _report(
        self,
        event: ModelTrained,
        evaluation_id: str,
        now: datetime,
        verdict: _Verdict,
        infra: InfraValidation,
        images: list[ImageScore],
    ) -> EvaluationReport:
        trained = event.payload
        return EvaluationReport(
            evaluation_id=evaluation_id,
            model_name=trained.model_name,
            run_id=trained.run_id,
            dataset_id=trained.dataset_id,
            dataset_version=trained.dataset_version,
            dataset_digest=trained.dataset_digest,
            artifact_key=trained.artifact_key,
            cause_event_id=str(event.event_id),
            evaluated_at=now,
            passed=verdict.passed,
            model_kind=trained.model_kind,
            threshold=trained.threshold,
            gate=self._gate,
            checks=verdict.checks,
            training_metrics=dict(trained.metrics),
            metrics=verdict.candidate,
            champion=verdict.champion,
            infra=infra,
            images=images,
        )

    async def _champion(
        self,
        model_name: str,
        images: Sequence[LabeledImage],
        inputs: Frames,
        frame_size: int,
    ) -> tuple[ChampionSummary | None, Probabilities | None]:
        """Production scored on the same test split (fitted to its own frame size when it is
        not the candidate's ``frame_size``), or why it could not be.

        Triton not answering is transient (the bus retries the evaluation); a production version
        that is not loaded, fails, or is from before frame input is recorded as skipped (see
        ``gate.check_champion``).
        """
        champion = await self._store.get_champion(model_name)
        if champion is None:
            return None, None
        problem = frame_size_problem(champion.frame_size)
        if problem is not None:
            return _skipped(champion, problem), None
        if champion.frame_size != frame_size:
            inputs = await self._inputs(images, champion.frame_size)
        staging = self._staging.staging
        with self._tracer.start_as_current_span(
            "evaluator.score_production",
            attributes={
                "screwops.model": champion.triton_model,
                "screwops.version": champion.version,
            },
        ):
            try:
                scored = await score(
                    self._staging.triton,
                    champion.triton_model,
                    champion.version,
                    inputs,
                    max_batch_size=staging.max_batch_size,
                    timeout_s=staging.infer_timeout_s,
                )
            except (NotFoundError, FailedPreconditionError, InvalidInputError) as failure:
                log.warning(
                    "cannot score production %s version %d: %s",
                    champion.triton_model,
                    champion.version,
                    failure.message,
                )
                return _skipped(champion, failure.message), None
        return (
            ChampionSummary(
                version=champion.version,
                triton_model=champion.triton_model,
                run_id=champion.run_id,
                threshold=champion.threshold,
                metrics=compute_metrics(images, scored.probabilities, threshold=champion.threshold),
            ),
            scored.probabilities,
        )

    async def _held_out_images(self, dataset_id: str, version: int) -> list[LabeledImage]:
        manifest = await self._document(Manifest, manifest_key(dataset_id, version))
        labels = await self._document(LabelSet, labels_key(dataset_id, version))
        split = await self._document(Split, split_key(dataset_id, version))
        check_version(dataset_id, version, ("split", split))
        return held_out_images(manifest, labels, split)

    async def _document(self, model: type[D], key: str) -> D:
        return parse_document(model, key, await self._objects.get_verified(Bucket.DATASETS, key))

    async def _inputs(self, images: Sequence[LabeledImage], frame_size: int) -> Frames:
        """Every test image fetched (verified against its content address) and fitted to frames
        of ``frame_size``."""
        slots = asyncio.Semaphore(self._concurrency)

        async def one(image: LabeledImage) -> Frames:
            async with slots:
                data = await self._objects.get_verified(
                    Bucket.IMAGES, image.key, sha256=image.sha256
                )
                return await asyncio.to_thread(frame, data, frame_size)

        batch: Frames = np.stack(await asyncio.gather(*(one(image) for image in images)))
        return batch

    async def _announce(self, record: EvaluationRecord, cause: ModelTrained) -> None:
        if record.passed:
            await self._emit(
                ModelApproved,
                ModelApprovedPayload(
                    model_name=record.model_name,
                    run_id=record.run_id,
                    evaluation_id=record.evaluation_id,
                    dataset_id=record.dataset_id,
                    dataset_version=record.dataset_version,
                    artifact_key=record.artifact_key,
                    metrics=record.metrics,
                    checks=record.checks,
                    champion_version=record.champion_version,
                    report_key=record.report_key,
                    threshold=record.threshold,
                    model_kind=record.model_kind,
                    frame_size=record.frame_size,
                ),
                cause=cause,
            )
            return
        await self._emit(
            ModelRejected,
            ModelRejectedPayload(
                model_name=record.model_name,
                run_id=record.run_id,
                evaluation_id=record.evaluation_id,
                metrics=record.metrics,
                checks=record.checks,
                report_key=record.report_key,
            ),
            cause=cause,
        )


@dataclass(frozen=True)
class _Verdict:
    """The gate's checks with the scores behind them, kept together for the report and the
    record; a candidate that could not be served has no scores."""

    checks: list[AssertionResult]
    candidate: SplitMetrics | None = None
    champion: ChampionSummary | None = None
    champion_scores: Probabilities | None = None
    no_part: int | None = None
    """Test images in which the candidate found no screw (scored as defects)."""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def _record(
    event: ModelTrained, evaluation_id: str, now: datetime, verdict: _Verdict, key: str
) -> EvaluationRecord:
    """The verdict as kept and announced: the candidate's numbers flat, with production's
    accuracy and recall beside them when it was scored."""
    trained = event.payload
    champion = verdict.champion
    numbers = verdict.candidate.flat() if verdict.candidate else {}
    if verdict.no_part is not None:
        numbers["no_part_images"] = float(verdict.no_part)
    if champion is not None and champion.metrics is not None:
        numbers["champion_accuracy"] = champion.metrics.accuracy
        if champion.metrics.recall is not None:
            numbers["champion_recall"] = champion.metrics.recall
    return EvaluationRecord(
        evaluation_id=evaluation_id,
        model_name=trained.model_name,
        run_id=trained.run_id,
        dataset_id=trained.dataset_id,
        dataset_version=trained.dataset_version,
        artifact_key=trained.artifact_key,
        passed=verdict.passed,
        metrics=numbers,
        checks=verdict.checks,
        champion_version=champion.version if champion is not None and champion.metrics else None,
        report_key=key,
        cause_event_id=str(event.event_id),
        evaluated_at=now,
        threshold=trained.threshold,
        model_kind=trained.model_kind,
        frame_size=trained.frame_size,
    )


def _skipped(champion: Champion, reason: str) -> ChampionSummary:
    """The production version, recorded as not compared, and why."""
    return ChampionSummary(
        version=champion.version,
        triton_model=champion.triton_model,
        run_id=champion.run_id,
        threshold=champion.threshold,
        skipped=reason,
    )


def _image_scores(
    images: Sequence[LabeledImage], staged: Staged | None, champion: Probabilities | None
) -> list[ImageScore]:
    if staged is None:
        return []
    return [
        ImageScore(
            sha256=image.sha256,
            label=image.label,
            defect_type=image.defect_type,
            probability=float(staged.scored.probabilities[i]),
            champion_probability=None if champion is None else float(champion[i]),
        )
        for i, image in enumerate(images)
    ]


def _millis(moment: datetime) -> datetime:
    """``moment`` at the millisecond precision MongoDB keeps, so a stored time reads back equal."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
