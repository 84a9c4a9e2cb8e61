"""The evaluation report: everything a person needs to see why a candidate was approved or not.

Written as JSON to ``models/evaluations/<evaluation_id>/attempts/<n>.json`` by the attempt that
claimed number n, and the recorded one copied to ``models/evaluations/<evaluation_id>.json`` (the
layout in ``screwops_contracts.models``); the events carry its key and the headline numbers.
The monitor reads the test-split scores back through
``screwops_contracts.models.EvaluationScores`` as its baseline, so a field that view names must
not change here without it.
"""

from __future__ import annotations

import re

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from screwops_contracts import AssertionResult
from screwops_contracts.datasets import Label
from screwops_contracts.models import EVALUATIONS_PREFIX, ModelKind
from screwops_contracts.models import evaluation_report_key as report_key
from screwops_metrics import SplitMetrics

from screwops_evaluator.config import Gate

__all__ = [
    "EVALUATIONS_PREFIX",
    "Champion",
    "EvaluationReport",
    "ImageScore",
    "InfraValidation",
    "report_attempt",
    "report_key",
]

_ATTEMPT_KEY = re.compile(
    rf"{EVALUATIONS_PREFIX}/(?P<evaluation>[^/]+)/attempts/(?P<attempt>\d+)\.json"
)


def report_attempt(key: str) -> tuple[str, int] | None:
    """The evaluation id and attempt number of a key :func:`report_key` gives an attempt; None
    for any other key."""
    found = _ATTEMPT_KEY.fullmatch(key)
    return None if found is None else (found["evaluation"], int(found["attempt"]))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InfraValidation(Section):
    """How the candidate fared in Triton under the staging name."""

    triton_model: str
    version: int
    served: bool = Field(description="Loaded and answered the warm-up inference.")
    check_probability: float | None = Field(
        default=None, description="What it answered for a blank frame."
    )
    frame_size: int = Field(default=0, description="The side of the frames it was given.")
    no_part_images: int | None = Field(
        default=None,
        description="Test images in which it found no screw: each counted as a defect verdict "
        "at probability 1.0 (a part the model cannot find is rejected on a line).",
    )
    failure: str | None = Field(default=None, description="Why it could not be served.")
    load_seconds: float | None = None
    scoring_seconds: float | None = None


class Champion(Section):
    """The production version the candidate was compared with, on the same test split, at its
    own threshold."""

    version: int
    triton_model: str
    run_id: str | None
    threshold: float
    metrics: SplitMetrics | None = None
    skipped: str | None = Field(default=None, description="Why it could not be scored.")


class ImageScore(Section):
    """One test image: its ground truth and what each model said."""

    sha256: str
    label: Label
    defect_type: str | None
    probability: float
    champion_probability: float | None = None


class EvaluationReport(Section):
    """The report of one evaluation of one training run."""

    evaluation_id: str
    model_name: str
    run_id: str
    dataset_id: str
    dataset_version: int
    dataset_digest: str
    artifact_key: str
    cause_event_id: str
    evaluated_at: AwareDatetime
    passed: bool
    model_kind: ModelKind
    threshold: float = Field(
        description="The threshold the run chose on its validation split, judged at here."
    )
    gate: Gate = Field(description="The rules the candidate was judged by.")
    checks: list[AssertionResult]
    training_metrics: dict[str, float] = Field(description="What the trainer reported.")
    metrics: SplitMetrics | None = Field(description="None when the candidate could not serve.")
    champion: Champion | None = Field(description="None for the first model (or no scoring).")
    infra: InfraValidation
    images: list[ImageScore] = Field(description="Per test image, by sha256.")
