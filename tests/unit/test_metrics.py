"""screwops_metrics: the confusion matrix, undefined metrics left undefined, per-type recall."""

from __future__ import annotations

import numpy as np
import pytest
from screwops_contracts.datasets import Label
from screwops_metrics import (
    UNSPECIFIED_DEFECT,
    LabeledImage,
    Probabilities,
    compute_metrics,
)


def images(*truth: tuple[Label, str | None]) -> list[LabeledImage]:
    return [
        LabeledImage(f"{i:064x}", f"raw/{i}", label, kind) for i, (label, kind) in enumerate(truth)
    ]


GOOD = (Label.GOOD, None)


def scores(*values: float) -> Probabilities:
    return np.array(values, dtype=np.float32)


def test_counts_and_rates_with_bad_as_the_positive_class() -> None:
    split = images(GOOD, GOOD, GOOD, (Label.BAD, "scratch_head"), (Label.BAD, "thread_top"))

    metrics = compute_metrics(split, scores(0.1, 0.7, 0.2, 0.9, 0.3), threshold=0.5)

    confusion = metrics.confusion
    assert (confusion.true_negatives, confusion.false_positives) == (2, 1)
    assert (confusion.false_negatives, confusion.true_positives) == (1, 1)
    assert (metrics.images, metrics.good, metrics.defective, metrics.correct) == (5, 3, 2, 3)
    assert metrics.accuracy == pytest.approx(0.6)
    assert metrics.precision == pytest.approx(0.5)
    assert metrics.recall == pytest.approx(0.5)
    assert metrics.f1 == pytest.approx(0.5)
    # Ranked: bads 0.9 and 0.3 against goods 0.1, 0.7, 0.2: 5 of 6 pairs in order.
    assert metrics.roc_auc == pytest.approx(5 / 6)
    assert metrics.per_defect_type["scratch_head"].recall == 1.0
    assert metrics.per_defect_type["thread_top"].model_dump() == {
        "images": 1,
        "caught": 0,
        "recall": 0.0,
        # Wilson's interval for 0 of 1: z^2 / (1 + z^2) at the top.
        "interval": {"low": 0.0, "high": pytest.approx(0.7935, abs=1e-4), "method": "wilson"},
    }


def test_each_rate_comes_with_its_95_percent_interval() -> None:
    split = images(*[GOOD] * 40, *[(Label.BAD, "scratch_head")] * 10)
    probabilities = scores(*[0.1] * 38, 0.6, 0.7, *[0.9] * 8, 0.2, 0.3)

    metrics = compute_metrics(split, probabilities, threshold=0.5)

    assert metrics.accuracy == pytest.approx(46 / 50)
    assert metrics.recall == pytest.approx(0.8)
    # Wilson's intervals for 46 of 50 and 8 of 10, worked out by hand from the formula.
    assert metrics.accuracy_interval.model_dump() == {
        "low": pytest.approx(0.8116, abs=1e-4),
        "high": pytest.approx(0.9685, abs=1e-4),
        "method": "wilson",
    }
    assert metrics.recall_interval is not None
    assert metrics.recall_interval.low == pytest.approx(0.4902, abs=1e-4)
    assert metrics.recall_interval.high == pytest.approx(0.9433, abs=1e-4)
    auc = metrics.roc_auc_interval
    assert auc is not None
    assert auc.method == "bootstrap"
    assert metrics.roc_auc is not None
    assert auc.low < metrics.roc_auc <= auc.high <= 1.0
    assert compute_metrics(split, probabilities, threshold=0.5) == metrics, "seeded: reproducible"
    flat = metrics.flat()
    assert (flat["recall_ci_low"], flat["roc_auc_ci_high"]) == (
        metrics.recall_interval.low,
        auc.high,
    )


def test_a_perfect_ranking_keeps_its_auc_interval_at_one() -> None:
    split = images(GOOD, GOOD, GOOD, (Label.BAD, None), (Label.BAD, None))

    metrics = compute_metrics(split, scores(0.1, 0.2, 0.3, 0.8, 0.9), threshold=0.5)

    assert metrics.roc_auc_interval is not None
    assert (metrics.roc_auc_interval.low, metrics.roc_auc_interval.high) == (1.0, 1.0)


def test_a_probability_at_the_threshold_counts_as_defective() -> None:
    metrics = compute_metrics(images(GOOD, (Label.BAD, None)), scores(0.5, 0.5), threshold=0.5)
    assert metrics.confusion.false_positives == 1
    assert metrics.confusion.true_positives == 1
    assert metrics.per_defect_type == {
        UNSPECIFIED_DEFECT: metrics.per_defect_type[UNSPECIFIED_DEFECT]
    }


def test_undefined_metrics_are_none_and_left_out_of_the_events() -> None:
    only_good = compute_metrics(images(GOOD, GOOD), scores(0.1, 0.2), threshold=0.5)

    assert only_good.accuracy == 1.0
    assert (only_good.precision, only_good.recall, only_good.f1, only_good.roc_auc) == (
        None,
        None,
        None,
        None,
    )
    flat = only_good.flat()
    assert flat["accuracy"] == 1.0
    assert flat["test_images"] == 2.0
    assert {"precision", "recall", "f1", "roc_auc"}.isdisjoint(flat)


def test_nothing_called_defective_has_no_precision_but_a_zero_f1() -> None:
    metrics = compute_metrics(
        images(GOOD, (Label.BAD, "scratch_neck")), scores(0.1, 0.2), threshold=0.5
    )
    assert metrics.precision is None
    assert metrics.recall == 0.0
    assert metrics.f1 == 0.0
    assert metrics.roc_auc == 1.0, "ranked right, though under the threshold"
    assert metrics.flat("champion_")["champion_recall_scratch_neck"] == 0.0


def test_one_probability_per_image_is_required() -> None:
    with pytest.raises(ValueError, match="2 images"):
        compute_metrics(images(GOOD, GOOD), scores(0.1), threshold=0.5)
    with pytest.raises(ValueError, match="at least one"):
        compute_metrics([], scores(), threshold=0.5)
