"""The approval gate: each check a pure function of numbers, each result carrying those numbers.

A candidate is approved only when every check passes: it loaded and answered in Triton, the test
split was large enough to judge it on, its accuracy beats the tutorial's bar, it catches enough of
the defective screws (overall and of every defect type with enough test images to tell), its
scores rank defects above good screws, and it is neither less accurate nor catching fewer defects
than the model in production on the same images.

Each check decides on the measured value and states its 95 % interval in its message, so a reader
sees how little a pass on a small test split proves.
"""

from __future__ import annotations

from dataclasses import dataclass

from screwops_contracts import AssertionResult
from screwops_metrics import SplitMetrics

from screwops_evaluator.config import Gate

__all__ = [
    "INFRA_VALIDATION",
    "Comparison",
    "check_accuracy",
    "check_champion",
    "check_champion_recall",
    "check_defect_recall",
    "check_defect_type_recall",
    "check_infra",
    "check_roc_auc",
    "check_test_split_size",
    "judge",
]

INFRA_VALIDATION = "infra_validation"
TEST_SPLIT_SIZE = "test_split_size"
ACCURACY = "accuracy"
DEFECT_RECALL = "defect_recall"
DEFECT_TYPE_RECALL = "defect_type_recall"
ROC_AUC = "roc_auc"
CHAMPION_COMPARISON = "champion_comparison"
CHAMPION_RECALL = "champion_recall_comparison"
# Accuracies are fractions of whole images: 0.96 - 0.98 is -0.020000000000000018, which is a
# drop of exactly the tolerance, not beyond it.
_SLACK = 1e-9


@dataclass(frozen=True)
class Comparison:
    """What the candidate is compared with: production on the same test split, or why not.

    ``version`` None: no model has been deployed yet. ``skipped`` set: there is a production
    version but it could not be scored (see :func:`check_champion`).
    """

    version: int | None = None
    metrics: SplitMetrics | None = None
    skipped: str | None = None


def check_infra(
    triton_model: str, version: int, *, probability: float | None, failure: str | None
) -> AssertionResult:
    """The candidate loaded in Triton and answered a warm-up inference with a probability."""
    expected = "loads in Triton and answers a blank image with a probability"
    if failure is not None:
        return AssertionResult(
            name=INFRA_VALIDATION,
            passed=False,
            expected=expected,
            message=f"{triton_model} version {version}: {failure}",
        )
    return AssertionResult(
        name=INFRA_VALIDATION,
        passed=True,
        observed=probability,
        expected=expected,
        message=f"{triton_model} version {version} loaded and answered {probability:.4f} "
        "for a blank image",
    )


def check_test_split_size(metrics: SplitMetrics, gate: Gate) -> AssertionResult:
    """Enough test images for the other numbers to mean something."""
    return AssertionResult(
        name=TEST_SPLIT_SIZE,
        passed=metrics.images >= gate.min_test_images,
        observed=metrics.images,
        expected=f">= {gate.min_test_images} images",
        message=f"{metrics.images} test images ({metrics.good} good, "
        f"{metrics.defective} defective)",
    )


def check_accuracy(metrics: SplitMetrics, gate: Gate) -> AssertionResult:
    """The tutorial's own gate: deploy only if accuracy > 0.95 (strictly)."""
    return AssertionResult(
        name=ACCURACY,
        passed=metrics.accuracy > gate.min_accuracy,
        observed=metrics.accuracy,
        expected=f"> {gate.min_accuracy:g}",
        message=f"accuracy {metrics.accuracy:.4f} ({metrics.accuracy_interval}): "
        f"{metrics.correct} of {metrics.images} test images right at threshold "
        f"{metrics.threshold:.4g}",
    )


def check_defect_recall(metrics: SplitMetrics, gate: Gate) -> AssertionResult:
    """Enough defective screws caught; a split without any cannot show it, so it fails."""
    expected = f">= {gate.min_defect_recall:g}"
    if metrics.recall is None:
        return AssertionResult(
            name=DEFECT_RECALL,
            passed=False,
            expected=expected,
            message="the test split holds no defective screw: defect recall is unmeasured",
        )
    missed = ", ".join(
        f"{name} {caught.caught}/{caught.images}"
        for name, caught in metrics.per_defect_type.items()
    )
    return AssertionResult(
        name=DEFECT_RECALL,
        passed=metrics.recall >= gate.min_defect_recall,
        observed=metrics.recall,
        expected=expected,
        message=f"defect recall {metrics.recall:.4f} ({metrics.recall_interval}): caught "
        f"{metrics.confusion.true_positives} of {metrics.defective} defective screws "
        f"({missed})",
    )


def check_defect_type_recall(metrics: SplitMetrics, gate: Gate) -> AssertionResult:
    """Every defect type with ``min_type_images`` test images caught as well as the floor asks.

    A model can reach its overall recall by catching the common, obvious defects and missing a
    rare, subtle type entirely; a type with fewer test images than ``min_type_images`` is listed
    but not gated, since a recall over two or three screws says next to nothing (its interval
    spans most of [0, 1]). ``observed`` is the lowest recall among the gated types.
    """
    floor = gate.type_recall_floor
    expected = f">= {floor:g} for each defect type with >= {gate.min_type_images} test images"
    gated = {
        name: caught
        for name, caught in metrics.per_defect_type.items()
        if caught.images >= gate.min_type_images
    }
    few = [name for name in metrics.per_defect_type if name not in gated]
    too_few = f"; not gated (< {gate.min_type_images} images): {', '.join(few)}" if few else ""
    if not gated:
        return AssertionResult(
            name=DEFECT_TYPE_RECALL,
            passed=True,
            expected=expected,
            message=f"no defect type has {gate.min_type_images} test images{too_few}",
        )
    below = [name for name, caught in gated.items() if caught.recall < floor]
    shown = ", ".join(
        f"{name} {caught.caught}/{caught.images} = {caught.recall:.4f} ({caught.interval})"
        for name, caught in gated.items()
    )
    verdict = f"below the floor: {', '.join(below)}; " if below else ""
    return AssertionResult(
        name=DEFECT_TYPE_RECALL,
        passed=not below,
        observed=min(caught.recall for caught in gated.values()),
        expected=expected,
        message=f"{verdict}{shown}{too_few}",
    )


def check_roc_auc(metrics: SplitMetrics, gate: Gate) -> AssertionResult:
    """The candidate's scores rank defective screws above good ones, whatever the threshold."""
    expected = f">= {gate.min_roc_auc:g}"
    if metrics.roc_auc is None:
        return AssertionResult(
            name=ROC_AUC,
            passed=False,
            expected=expected,
            message="the test split holds one class only: ROC AUC is unmeasured",
        )
    return AssertionResult(
        name=ROC_AUC,
        passed=metrics.roc_auc >= gate.min_roc_auc,
        observed=metrics.roc_auc,
        expected=expected,
        message=f"image ROC AUC {metrics.roc_auc:.4f} ({metrics.roc_auc_interval}) over "
        f"{metrics.good} good and {metrics.defective} defective test screws",
    )


def check_champion(metrics: SplitMetrics, comparison: Comparison, gate: Gate) -> AssertionResult:
    """Not worse than production on the same test split, beyond the tolerance.

    ``observed`` is the candidate's accuracy minus production's. The first model has nothing to
    be compared with and passes. A production version that cannot be scored (not loaded in
    Triton, or failing) is recorded as skipped and passes too: the absolute checks still hold
    the bar, and refusing every candidate until production answers again would block the
    pipeline on the very model a candidate may be meant to replace.
    """
    expected = f">= -{gate.max_accuracy_drop:g} (accuracy minus production's on the same split)"
    if comparison.version is None:
        return AssertionResult(
            name=CHAMPION_COMPARISON,
            passed=True,
            expected=expected,
            message="no production model yet",
        )
    if comparison.metrics is None:
        return AssertionResult(
            name=CHAMPION_COMPARISON,
            passed=True,
            expected=expected,
            message=f"skipped: production version {comparison.version} could not be scored "
            f"({comparison.skipped}); judged on the absolute thresholds only",
        )
    champion = comparison.metrics.accuracy
    delta = metrics.accuracy - champion
    return AssertionResult(
        name=CHAMPION_COMPARISON,
        passed=delta >= -gate.max_accuracy_drop - _SLACK,
        observed=delta,
        expected=expected,
        message=f"accuracy {metrics.accuracy:.4f} vs production version {comparison.version}'s "
        f"{champion:.4f} at its threshold {comparison.metrics.threshold:.4g} (difference "
        f"{delta:+.4f}, allowed drop {gate.max_accuracy_drop:g})",
    )


def check_champion_recall(
    metrics: SplitMetrics, comparison: Comparison, gate: Gate
) -> AssertionResult:
    """Not catching fewer defects than production on the same test split, beyond the tolerance.

    Accuracy alone would let a candidate that trades missed defects for fewer false rejects
    replace production: on a split of mostly good screws that raises accuracy while more
    defects reach the customer. ``observed`` is the candidate's recall minus production's; no
    production, or none scored, passes as in :func:`check_champion`.
    """
    allowed = gate.recall_drop_allowed
    expected = f">= -{allowed:g} (defect recall minus production's on the same split)"
    if comparison.version is None or comparison.metrics is None:
        return AssertionResult(
            name=CHAMPION_RECALL,
            passed=True,
            expected=expected,
            message="no production model yet"
            if comparison.version is None
            else f"skipped: production version {comparison.version} could not be scored",
        )
    if metrics.recall is None or comparison.metrics.recall is None:
        return AssertionResult(
            name=CHAMPION_RECALL,
            passed=True,
            expected=expected,
            message="the test split holds no defective screw: nothing to compare "
            "(defect_recall fails on it)",
        )
    champion = comparison.metrics.recall
    delta = metrics.recall - champion
    return AssertionResult(
        name=CHAMPION_RECALL,
        passed=delta >= -allowed - _SLACK,
        observed=delta,
        expected=expected,
        message=f"defect recall {metrics.recall:.4f} vs production version "
        f"{comparison.version}'s {champion:.4f} at its threshold "
        f"{comparison.metrics.threshold:.4g} (difference {delta:+.4f}, allowed drop {allowed:g})",
    )


def judge(
    infra: AssertionResult, metrics: SplitMetrics, comparison: Comparison, gate: Gate
) -> list[AssertionResult]:
    """Every check of a candidate that served and was scored, in a fixed order."""
    return [
        infra,
        check_test_split_size(metrics, gate),
        check_accuracy(metrics, gate),
        check_defect_recall(metrics, gate),
        check_defect_type_recall(metrics, gate),
        check_roc_auc(metrics, gate),
        check_champion(metrics, comparison, gate),
        check_champion_recall(metrics, comparison, gate),
    ]
