"""Evaluation reports as the evaluator writes them, for the monitor's baseline, a classifier's
scores on a line, a reviewer's verdict on an inspection, and the registry's rollout changes
(unit and integration tests)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from screwops_contracts import (
    InspectionReviewed,
    InspectionReviewedPayload,
    ModelRolloutChanged,
    ModelRolloutChangedPayload,
)
from screwops_contracts.datasets import Label
from screwops_contracts.events import ServedVersion
from screwops_contracts.models import ModelKind, evaluation_id_of
from screwops_evaluator.config import Gate
from screwops_evaluator.report import EvaluationReport, ImageScore, InfraValidation

from tests.support import FRAME_SIZE

Change = Literal["started", "advanced", "paused", "resumed", "completed", "aborted"]


def evaluator_report(
    model_name: str,
    run_id: str,
    probabilities: Iterable[float],
    *,
    dataset_id: str,
    dataset_version: int = 1,
) -> bytes:
    """The evaluator's report of ``run_id`` whose test split the model scored as
    ``probabilities``, serialised as ``EvaluatorService`` writes it to MinIO."""
    report = EvaluationReport(
        evaluation_id=evaluation_id_of(model_name, run_id),
        model_name=model_name,
        run_id=run_id,
        dataset_id=dataset_id,
        dataset_version=dataset_version,
        dataset_digest="digest",
        artifact_key=f"runs/{run_id}/saved_model",
        cause_event_id="cause",
        evaluated_at=datetime(2026, 1, 1, tzinfo=UTC),
        passed=True,
        model_kind=ModelKind.SUPERVISED,
        threshold=0.5,
        gate=Gate(),
        checks=[],
        training_metrics={},
        metrics=None,
        champion=None,
        infra=InfraValidation(triton_model="staging", version=1, served=True),
        images=[
            ImageScore(
                sha256=f"{i:064x}",
                label=Label.BAD if p >= 0.5 else Label.GOOD,
                defect_type=None,
                probability=p,
            )
            for i, p in enumerate(probabilities)
        ],
    )
    return json.dumps(report.model_dump(mode="json"), sort_keys=True, indent=2).encode()


def line_scores(
    rng: np.random.Generator, n: int, *, defects: float = 0.5, shift: float = 0.0
) -> list[float]:
    """A classifier's scores on a line where ``defects`` of the screws are defective: confident,
    with some doubt; ``shift`` moves every logit (what a change of light does to a model that
    never saw it)."""
    bad = rng.random(n) < defects
    p = np.where(bad, rng.beta(8, 1.5, n), rng.beta(1.5, 8, n))
    logits = np.log(p / (1 - p)) + shift
    return [float(x) for x in 1 / (1 + np.exp(-logits))]


def rollout_changed(
    model_name: str,
    change: Change,
    *,
    step: int,
    sequence: int,
    at: datetime,
    strategy: Literal["canary", "shadow"] = "canary",
    rollout_id: str = "v2-5",
    min_inspections: int = 120,
    min_step_seconds: float = 60.0,
) -> ModelRolloutChanged:
    """The registry's ``model.rollout_changed`` of version 2 (threshold 0.6) rolled out beside
    production version 1 (threshold 0.5), in steps of 5, 25 and 100 % (a canary) or one of 10 %
    (a shadow), at ``step`` after ``change``."""
    steps = [5.0, 25.0, 100.0] if strategy == "canary" else [10.0]
    states: dict[Change, Literal["running", "paused", "completed", "aborted"]] = {
        "completed": "completed",
        "aborted": "aborted",
        "paused": "paused",
    }
    state = states.get(change, "running")
    event = ModelRolloutChanged.origin(
        ModelRolloutChangedPayload(
            model_name=model_name,
            rollout_id=rollout_id,
            change=change,
            state=state,
            strategy=strategy,
            production=_served(model_name, 1, 0.5),
            candidate=_served(model_name, 2, 0.6),
            steps=steps,
            step=step,
            share=steps[step] if state == "running" else 0.0,
            lines=[],
            min_inspections=min_inspections,
            min_step_seconds=min_step_seconds,
            actor="registry",
            reason="approved",
            sequence=sequence,
        ),
        producer="registry",
        key=f"{model_name}/{rollout_id}/{sequence}",
    )
    return event.model_copy(update={"occurred_at": at})


def _served(model_name: str, version: int, threshold: float) -> ServedVersion:
    return ServedVersion(
        version=version,
        triton_model=model_name,
        threshold=threshold,
        model_kind=ModelKind.SUPERVISED,
        frame_size=FRAME_SIZE,
    )


def review(
    model_name: str, version: int, inspection_id: str, *, correct: bool, reviewed_at: datetime
) -> InspectionReviewed:
    """A reviewer's verdict on a GOOD answer of ``version``: ``correct`` or not."""
    return InspectionReviewed.origin(
        InspectionReviewedPayload(
            inspection_id=inspection_id,
            line_id="line-1",
            model_name=model_name,
            model_version=version,
            verdict="GOOD",
            defect_probability=0.2,
            label="good" if correct else "bad",
            verdict_correct=correct,
            reviewer="ana",
            reviewed_at=reviewed_at,
        ),
        producer="labeling",
        key=f"{inspection_id}/{correct}",
    )
