"""The operating point: chosen on validation scores, never barely catching the weakest defect."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from screwops_contracts.models import ModelKind
from screwops_trainer.threshold import ThresholdError, choose_threshold

Array = npt.NDArray[np.float32]
SUPERVISED = ModelKind.SUPERVISED
GOOD_ONLY = ModelKind.GOOD_ONLY


def split(good: list[float], defective: list[float]) -> tuple[Array, Array]:
    scores = np.array([*good, *defective], dtype=np.float32)
    targets = np.array([0.0] * len(good) + [1.0] * len(defective), dtype=np.float32)
    return scores, targets


def test_supervised_takes_the_fewest_false_rejects_that_still_reach_the_recall() -> None:
    # 20 defects: recall 0.95 may miss one, so the weakest (0.05) is let go and 0.40 must be
    # caught; the good screw at 0.35 is the next lower score.
    defective = [0.05, 0.40, *np.linspace(0.6, 0.99, 18).tolist()]
    scores, targets = split([0.1, 0.2, 0.35, 0.45], defective)

    point = choose_threshold(scores, targets, SUPERVISED, min_recall=0.95)

    assert point.threshold == pytest.approx((0.40 + 0.35) / 2)
    assert point.recall == pytest.approx(19 / 20)
    assert point.false_reject_rate == pytest.approx(1 / 4)  # 0.45 is rejected
    assert (point.good, point.defective) == (4, 20)


def test_supervised_threshold_sits_midway_not_on_the_weakest_caught_defect() -> None:
    """The pitfall: a threshold at 0.40 itself would catch that defect by a hair."""
    scores, targets = split([0.1, 0.3], [0.40, 0.8, 0.9])

    point = choose_threshold(scores, targets, SUPERVISED, min_recall=1.0)

    assert 0.3 < point.threshold < 0.40
    assert point.threshold == pytest.approx(0.35)
    assert point.recall == 1.0
    assert point.false_reject_rate == 0.0


def test_supervised_catches_every_defect_it_can_at_no_more_false_rejects() -> None:
    """Recall 0.5 needs only 0.98, but every defect above the highest good screw (0.2) is caught
    at the same false-reject rate (none): the threshold goes down to just above 0.2."""
    scores, targets = split([0.1, 0.2], [0.3, 0.6, 0.98, 0.99])

    point = choose_threshold(scores, targets, SUPERVISED, min_recall=0.5)

    assert point.threshold == pytest.approx((0.3 + 0.2) / 2)
    assert point.recall == 1.0
    assert point.false_reject_rate == 0.0


def test_supervised_weakest_defect_below_every_good_screw_costs_false_rejects() -> None:
    scores, targets = split([0.2, 0.5, 0.6], [0.1, 0.9])

    point = choose_threshold(scores, targets, SUPERVISED, min_recall=0.95)

    assert point.threshold == pytest.approx(0.05)  # halfway to 0: nothing scores lower
    assert point.recall == 1.0
    assert point.false_reject_rate == 1.0


def test_supervised_with_tied_scores_catches_every_tied_defect() -> None:
    scores, targets = split([0.5, 0.2], [0.5, 0.5, 0.9])

    point = choose_threshold(scores, targets, SUPERVISED, min_recall=1.0)

    assert point.threshold == pytest.approx(0.35)
    assert point.recall == 1.0


def test_supervised_without_a_defective_validation_image_refuses() -> None:
    scores, targets = split([0.1, 0.2, 0.3], [])

    with pytest.raises(ThresholdError, match="holds none"):
        choose_threshold(scores, targets, SUPERVISED)


def test_good_only_takes_the_quantile_of_good_scores_and_ignores_defects() -> None:
    good = np.linspace(0.0, 0.99, 100)
    scores, targets = split(good.tolist(), [0.05, 0.995])

    point = choose_threshold(scores, targets, GOOD_ONLY, target_false_reject=0.05)

    assert point.threshold == pytest.approx(float(np.quantile(good, 0.95)))
    assert point.false_reject_rate == pytest.approx(0.05)
    assert point.recall == 0.5
    assert point.kind is GOOD_ONLY


def test_good_only_below_the_minimum_of_good_images_refuses_naming_the_counts() -> None:
    scores, targets = split([0.1] * 49, [0.9] * 10)

    with pytest.raises(ThresholdError, match=r"at least 50 good validation images.*holds 49"):
        choose_threshold(scores, targets, GOOD_ONLY, min_good=50)


def test_good_only_without_defects_reports_no_recall() -> None:
    scores, targets = split(np.linspace(0.0, 0.5, 60).tolist(), [])

    point = choose_threshold(scores, targets, GOOD_ONLY)

    assert point.recall is None
    assert "val_recall_at_threshold" not in point.metrics()
    assert point.metrics()["val_good"] == 60


@pytest.mark.parametrize("bad", [np.nan, 1.5, -0.1])
def test_a_score_that_is_no_probability_refuses(bad: float) -> None:
    scores, targets = split([0.1, bad], [0.9])

    with pytest.raises(ThresholdError, match="outside"):
        choose_threshold(scores, targets, SUPERVISED)


def test_scores_and_targets_of_different_lengths_refuse() -> None:
    with pytest.raises(ThresholdError, match="3 validation scores for 2"):
        choose_threshold(np.zeros(3), np.zeros(2), SUPERVISED)
