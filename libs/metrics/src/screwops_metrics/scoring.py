"""Metrics of one model's defect probabilities on a labelled set: pure functions over numbers.

The evaluator scores its test split with them, the quality benchmark its hold-out set.

The positive class is ``bad`` (a defective screw), because what the line cares about most is how
many defects get through: recall is the share of defective screws called defective. Metrics that
are undefined on a split (recall without a defective screw, ROC AUC with one class) are None,
never a made-up 0 or 1, so a gate can refuse to pass on a number nobody measured.

A test split of a hundred images measures a rate to within several points, so each headline
number comes with its 95 % interval: Wilson's for the proportions (accuracy, recall, recall per
defect type), which stays inside [0, 1] and honest at 0 or n successes where the normal
approximation does not, and a bootstrap for ROC AUC, resampling good and defective screws apart
so every resample has both classes. The bootstrap is seeded: the same scores give the same report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import binomtest, bootstrap, mannwhitneyu
from screwops_contracts.datasets import Label
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

Probabilities = npt.NDArray[np.float32]

UNSPECIFIED_DEFECT = "unspecified"
"""Where a defective image whose label names no defect type is counted."""

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 17


@dataclass(frozen=True)
class LabeledImage:
    """One image of the version's test split, with its ground truth."""

    sha256: str
    key: str
    label: Label
    defect_type: str | None

    @property
    def defective(self) -> bool:
        return self.label is Label.BAD


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Interval(Frozen):
    """A 95 % confidence interval of one metric, and how it was computed."""

    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)
    method: str = Field(description="'wilson' (a proportion) or 'bootstrap' (ROC AUC).")

    def __str__(self) -> str:
        return f"95% CI {self.low:.4f}-{self.high:.4f}"


def wilson(successes: int, trials: int) -> Interval:
    """Wilson's 95 % interval of ``successes`` out of ``trials`` (at least one)."""
    low, high = binomtest(successes, trials).proportion_ci(CONFIDENCE, method="wilson")
    return Interval(low=float(low), high=float(high), method="wilson")


def auroc_interval(good: npt.NDArray[np.float32], defective: npt.NDArray[np.float32]) -> Interval:
    """A percentile bootstrap of ROC AUC, good and defective scores resampled apart.

    ROC AUC is the Mann-Whitney U of defective over good scores divided by the pairs, so each
    resample costs one rank test. The percentile method (not BCa) keeps a perfectly separating
    model's interval at [1, 1] instead of failing on a degenerate distribution.
    """

    def auc(
        good: npt.NDArray[np.float64], defective: npt.NDArray[np.float64], axis: int
    ) -> npt.NDArray[np.float64]:
        pairs = good.shape[axis] * defective.shape[axis]
        u: npt.NDArray[np.float64] = mannwhitneyu(defective, good, axis=axis).statistic / pairs
        return u

    result = bootstrap(
        (good.astype(np.float64), defective.astype(np.float64)),
        auc,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    low, high = result.confidence_interval
    return Interval(low=float(low), high=float(high), method="bootstrap")


class ConfusionMatrix(Frozen):
    """Counts at the threshold; ``bad`` is the positive class."""

    true_negatives: int = Field(ge=0, description="Good screws passed.")
    false_positives: int = Field(ge=0, description="Good screws called defective.")
    false_negatives: int = Field(ge=0, description="Defective screws passed: the costly error.")
    true_positives: int = Field(ge=0, description="Defective screws caught.")


class DefectRecall(Frozen):
    """How many defective screws of one defect type were caught."""

    images: int = Field(ge=1)
    caught: int = Field(ge=0)
    recall: float = Field(ge=0.0, le=1.0)
    interval: Interval


class SplitMetrics(Frozen):
    """One model's metrics on one test split at one threshold."""

    images: int = Field(ge=1)
    good: int = Field(ge=0)
    defective: int = Field(ge=0)
    threshold: float
    accuracy: float
    accuracy_interval: Interval
    precision: float | None = Field(description="None when nothing was called defective.")
    recall: float | None = Field(description="None when the split holds no defective screw.")
    recall_interval: Interval | None
    f1: float | None = Field(description="None when nothing is defective, truly or called.")
    roc_auc: float | None = Field(description="None when the split holds one class only.")
    roc_auc_interval: Interval | None = Field(
        description="None when the split holds under two screws of a class: nothing to resample."
    )
    confusion: ConfusionMatrix
    per_defect_type: dict[str, DefectRecall] = Field(
        description="Recall per defect type (labels naming none: 'unspecified')."
    )

    @property
    def correct(self) -> int:
        return self.confusion.true_negatives + self.confusion.true_positives

    def flat(self, prefix: str = "") -> dict[str, float]:
        """The defined numbers as the events carry them (``recall_<defect type>`` per type)."""
        values: dict[str, float | None] = {
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "roc_auc": self.roc_auc,
        }
        for name, interval in (
            ("accuracy", self.accuracy_interval),
            ("recall", self.recall_interval),
            ("roc_auc", self.roc_auc_interval),
        ):
            if interval is not None:
                values[f"{name}_ci_low"] = interval.low
                values[f"{name}_ci_high"] = interval.high
        values |= {
            "threshold": self.threshold,
            "test_images": float(self.images),
            "true_negatives": float(self.confusion.true_negatives),
            "false_positives": float(self.confusion.false_positives),
            "false_negatives": float(self.confusion.false_negatives),
            "true_positives": float(self.confusion.true_positives),
        }
        for defect_type, caught in self.per_defect_type.items():
            values[f"recall_{defect_type}"] = caught.recall
        return {f"{prefix}{name}": value for name, value in values.items() if value is not None}


def compute_metrics(
    images: Sequence[LabeledImage], probabilities: Probabilities, *, threshold: float
) -> SplitMetrics:
    """Score ``probabilities`` (one per image, in order) against the images' labels.

    Raises:
        ValueError: no images, or not one probability per image.
    """
    if not images:
        raise ValueError("metrics need at least one image")
    if probabilities.shape != (len(images),):
        raise ValueError(f"{len(images)} images but probabilities of shape {probabilities.shape}")
    truth = np.array([image.defective for image in images], dtype=np.int8)
    predicted = (probabilities >= threshold).astype(np.int8)
    [tn, fp], [fn, tp] = confusion_matrix(truth, predicted, labels=[0, 1]).tolist()
    defective = int(truth.sum())
    both_classes = 0 < defective < len(images)
    return SplitMetrics(
        images=len(images),
        good=len(images) - defective,
        defective=defective,
        threshold=threshold,
        accuracy=float(accuracy_score(truth, predicted)),
        accuracy_interval=wilson(tn + tp, len(images)),
        precision=_defined(precision_score(truth, predicted, zero_division=np.nan)),
        recall=_defined(recall_score(truth, predicted, zero_division=np.nan)),
        recall_interval=wilson(tp, defective) if defective else None,
        f1=_defined(f1_score(truth, predicted, zero_division=np.nan)),
        roc_auc=float(roc_auc_score(truth, probabilities)) if both_classes else None,
        roc_auc_interval=(
            auroc_interval(probabilities[truth == 0], probabilities[truth == 1])
            if 2 <= defective <= len(images) - 2
            else None
        ),
        confusion=ConfusionMatrix(
            true_negatives=tn, false_positives=fp, false_negatives=fn, true_positives=tp
        ),
        per_defect_type=_per_defect_type(images, predicted),
    )


def _defined(value: float) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def _per_defect_type(
    images: Sequence[LabeledImage], predicted: npt.NDArray[np.int8]
) -> dict[str, DefectRecall]:
    seen: dict[str, list[bool]] = {}
    for image, called in zip(images, predicted.tolist(), strict=True):
        if image.defective:
            seen.setdefault(image.defect_type or UNSPECIFIED_DEFECT, []).append(bool(called))
    return {
        defect_type: DefectRecall(
            images=len(calls),
            caught=sum(calls),
            recall=sum(calls) / len(calls),
            interval=wilson(sum(calls), len(calls)),
        )
        for defect_type, calls in sorted(seen.items())
    }
