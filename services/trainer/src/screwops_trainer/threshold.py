"""The operating point: the decision threshold a trained model is judged and served at.

A score of 0.5 means nothing in particular for a model trained on a few hundred screws, and for a
good-only model it means nothing at all, so the threshold is chosen from the run's validation
split (never the test split, which the evaluator alone sees) and travels with the model:

* **supervised**: the lowest false-reject rate (good screws called defective) among thresholds
  that catch at least ``min_recall`` of the validation defects, and at that rate the most
  defects (a threshold lowered to just above the next good screw rejects no more good screws);
* **good-only**: the ``1 - target_false_reject`` quantile of the good validation scores, which
  needs enough good images to mean something (``min_good``).

Pure functions over numbers; the trainer scores its exported model on the validation split and
hands the scores here.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from screwops_contracts.models import ModelKind
from screwops_errors import FailedPreconditionError

__all__ = [
    "OperatingPoint",
    "Scores",
    "ThresholdError",
    "ThresholdRules",
    "choose_threshold",
]

Scores = npt.NDArray[np.float32]


class ThresholdError(FailedPreconditionError):
    """The validation split cannot support a threshold: the run fails with this reason."""


class ThresholdRules(BaseModel):
    """How a run's threshold is chosen; a trainer setting (``SCREWOPS_TRAINER_THRESHOLD__*``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_recall: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        description="Supervised: share of the validation defects the threshold must catch.",
    )
    target_false_reject: float = Field(
        0.01,
        gt=0.0,
        lt=1.0,
        description="Good-only: share of good validation screws the threshold may reject.",
    )
    min_good: int = Field(
        50,
        ge=1,
        description="Good-only: fewest good validation images a quantile may rest on (at 1 % "
        "false rejects, 50 images put the estimate between the two highest good scores).",
    )


class OperatingPoint(BaseModel):
    """A chosen threshold and the validation figures it was chosen with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ModelKind
    threshold: float = Field(ge=0.0, le=1.0)
    good: int = Field(ge=0, description="Good validation images.")
    defective: int = Field(ge=0, description="Defective validation images.")
    false_reject_rate: float = Field(
        ge=0.0, le=1.0, description="Good validation screws at or above the threshold."
    )
    recall: float | None = Field(
        description="Defective validation screws at or above it; None without any."
    )

    def metrics(self) -> dict[str, float]:
        """The figures as a run's metrics carry them (``val_*_at_threshold``)."""
        figures = {
            "val_false_reject_at_threshold": self.false_reject_rate,
            "val_recall_at_threshold": self.recall,
            "val_good": float(self.good),
            "val_defective": float(self.defective),
        }
        return {name: value for name, value in figures.items() if value is not None}


def choose_threshold(
    scores: npt.ArrayLike,
    targets: npt.ArrayLike,
    kind: ModelKind,
    *,
    min_recall: float = 0.95,
    target_false_reject: float = 0.01,
    min_good: int = 50,
) -> OperatingPoint:
    """The threshold of a model of ``kind`` from its validation ``scores`` (1 = defective target).

    Supervised: every threshold in the gap between the weakest defect that must be caught and the
    next lower validation score has the same validation figures, and the lowest false-reject
    rate among those catching ``min_recall`` of the defects is reached at the top of that gap,
    at the weakest caught defect's own score. A threshold placed there calls that defect by a
    hair, so any unseen defect a little weaker is missed and the validation recall overstates
    what the line will see; the middle of the gap is just as good on validation and keeps a
    margin on both sides, so that is where it goes.

    Good-only: the ``1 - target_false_reject`` quantile (linear interpolation) of the good
    validation scores: defective validation images, if any, play no part, since a good-only
    model must not be tuned on defects it never learnt.

    Raises:
        ThresholdError: scores and targets disagree in length or hold a non-finite score or a
            score outside [0, 1]; supervised without a defective validation image; good-only
            with fewer than ``min_good`` good validation images.
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    defective = np.asarray(targets).reshape(-1) >= 0.5
    if values.shape != defective.shape:
        raise ThresholdError(
            f"{values.size} validation scores for {defective.size} validation images"
        )
    if (
        not np.all(np.isfinite(values))
        or values.min(initial=0.0) < 0
        or values.max(initial=0.0) > 1
    ):
        raise ThresholdError("the model scored a validation image outside [0, 1]")
    good_scores, defect_scores = values[~defective], values[defective]
    if kind is ModelKind.GOOD_ONLY:
        if good_scores.size < min_good:
            raise ThresholdError(
                f"a good-only threshold at {target_false_reject:.2%} false rejects needs at "
                f"least {min_good} good validation images; the validation split holds "
                f"{good_scores.size}"
            )
        threshold = float(np.quantile(good_scores, 1.0 - target_false_reject))
    else:
        if defect_scores.size == 0:
            raise ThresholdError(
                "a supervised threshold needs defective validation images to reach a defect "
                f"recall of at least {min_recall:g}; the validation split holds none"
            )
        required = _weakest_required(defect_scores, min_recall)
        threshold = _midway_below(values, _weakest_free(good_scores, defect_scores, required))
    return OperatingPoint(
        kind=kind,
        threshold=threshold,
        good=int(good_scores.size),
        defective=int(defect_scores.size),
        false_reject_rate=float(np.mean(good_scores >= threshold)) if good_scores.size else 0.0,
        recall=float(np.mean(defect_scores >= threshold)) if defect_scores.size else None,
    )


def _weakest_required(defect_scores: npt.NDArray[np.float64], min_recall: float) -> float:
    """The score of the weakest defect a threshold must still catch for ``min_recall``."""
    must_catch = math.ceil(min_recall * defect_scores.size - 1e-9)
    return float(np.sort(defect_scores)[::-1][must_catch - 1])


def _weakest_free(
    good_scores: npt.NDArray[np.float64], defect_scores: npt.NDArray[np.float64], required: float
) -> float:
    """The weakest defect caught at the false rejects that catching ``required`` already costs.

    Every defect scored between ``required`` and the highest good screw below it is caught by
    lowering the threshold to just above that good screw, which rejects no more good screws. On
    a small validation split, stopping at ``required`` instead would serve a threshold far above
    the good screws that lets half the line's defects through for nothing.
    """
    below = good_scores[good_scores < required]
    floor = float(below.max()) if below.size else -math.inf
    return float(defect_scores[defect_scores > floor].min())


def _midway_below(values: npt.NDArray[np.float64], score: float) -> float:
    """Halfway between ``score`` and the next lower validation score (or 0 when none is lower)."""
    lower = values[values < score]
    below = float(lower.max()) if lower.size else 0.0
    return (score + below) / 2.0
