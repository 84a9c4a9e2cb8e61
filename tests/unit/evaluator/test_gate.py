"""The gate's checks: each threshold at its boundary, and the comparison with production."""

from __future__ import annotations

import numpy as np
import pytest
from screwops_contracts.datasets import Label
from screwops_evaluator.config import EvaluatorSettings, Gate
from screwops_evaluator.gate import (
    Comparison,
    check_accuracy,
    check_champion,
    check_champion_recall,
    check_defect_recall,
    check_defect_type_recall,
    check_infra,
    check_roc_auc,
    check_test_split_size,
    judge,
)
from screwops_metrics import LabeledImage, SplitMetrics, compute_metrics


def metrics(
    images: int = 100,
    *,
    defects: int = 10,
    missed: int = 0,
    false_alarms: int = 0,
    types: tuple[str, ...] = ("scratch_head",),
) -> SplitMetrics:
    """``images`` test images, ``defects`` of them defective; ``missed`` defects passed and
    ``false_alarms`` good screws called defective. The caught defects are of ``types`` in turn,
    the missed ones all of the last type."""
    caught = defects - missed
    kinds = [types[i % len(types)] for i in range(caught)] + [types[-1]] * missed
    truth = [Label.BAD] * defects + [Label.GOOD] * (images - defects)
    split = [
        LabeledImage(f"{i:064x}", f"raw/{i}", t, kinds[i] if t is Label.BAD else None)
        for i, t in enumerate(truth)
    ]
    called = [True] * (defects - missed) + [False] * missed
    called += [True] * false_alarms + [False] * (images - defects - false_alarms)
    probabilities = np.array([0.9 if c else 0.1 for c in called], dtype=np.float32)
    return compute_metrics(split, probabilities, threshold=0.5)


GATE = Gate()


def test_accuracy_must_beat_the_bar_strictly() -> None:
    at_bar = check_accuracy(metrics(false_alarms=5), GATE)
    assert not at_bar.passed
    assert at_bar.observed == pytest.approx(0.95)
    assert at_bar.expected == "> 0.95"
    # Wilson's interval for 95 of 100, as tabulated: 0.8882 to 0.9785.
    assert at_bar.message == (
        "accuracy 0.9500 (95% CI 0.8882-0.9785): 95 of 100 test images right at threshold 0.5"
    )
    assert check_accuracy(metrics(false_alarms=4), GATE).passed


def test_defect_recall_may_equal_its_minimum() -> None:
    result = check_defect_recall(metrics(defects=20, missed=2), GATE)
    assert result.observed == pytest.approx(0.9)
    assert result.passed
    assert result.expected == ">= 0.9"
    assert result.message == (
        "defect recall 0.9000 (95% CI 0.6990-0.9721): caught 18 of 20 defective screws "
        "(scratch_head 18/20)"
    )
    below = check_defect_recall(metrics(defects=20, missed=3), GATE)
    assert not below.passed
    assert below.observed == pytest.approx(0.85)


def test_a_split_without_defects_cannot_show_recall() -> None:
    result = check_defect_recall(metrics(10, defects=0), GATE)
    assert not result.passed
    assert result.observed is None
    assert "no defective screw" in result.message


def test_too_small_a_test_split_fails() -> None:
    result = check_test_split_size(metrics(4, defects=2), GATE)
    assert (result.passed, result.observed, result.expected) == (False, 4, ">= 5 images")
    assert result.message == "4 test images (2 good, 2 defective)"


def test_the_first_model_has_no_champion_to_beat() -> None:
    result = check_champion(metrics(false_alarms=4), Comparison(), GATE)
    assert result.passed
    assert result.message == "no production model yet"
    assert result.observed is None


def test_a_drop_of_exactly_the_tolerance_passes_and_more_fails() -> None:
    production = Comparison(version=3, metrics=metrics(false_alarms=2))
    equal_drop = check_champion(metrics(false_alarms=4), production, GATE)
    assert equal_drop.passed, equal_drop
    assert equal_drop.observed == pytest.approx(-0.02)
    beyond = check_champion(metrics(false_alarms=5), production, GATE)
    assert not beyond.passed
    assert beyond.observed == pytest.approx(-0.03)
    assert beyond.message == (
        "accuracy 0.9500 vs production version 3's 0.9800 at its threshold 0.5 "
        "(difference -0.0300, allowed drop 0.02)"
    )
    better = check_champion(metrics(), production, GATE)
    assert better.passed
    assert better.observed == pytest.approx(0.02)


def test_a_production_version_that_cannot_be_scored_is_skipped_not_blocking() -> None:
    result = check_champion(
        metrics(false_alarms=3), Comparison(version=2, skipped="version 2 is not loaded"), GATE
    )
    assert result.passed
    assert result.observed is None
    assert result.message.startswith("skipped: production version 2 could not be scored")
    assert "version 2 is not loaded" in result.message


def test_infra_validation_reports_the_reason_or_the_warm_up_answer() -> None:
    failed = check_infra("staging", 7, probability=None, failure="failed to load: bad graph")
    assert (failed.name, failed.passed) == ("infra_validation", False)
    assert failed.message == "staging version 7: failed to load: bad graph"
    passed = check_infra("staging", 7, probability=0.25, failure=None)
    assert (passed.passed, passed.observed) == (True, 0.25)


def test_a_defect_type_with_enough_images_is_gated_on_its_own_recall() -> None:
    # 30 defects: 12 scratch_head, all caught; 18 thread_top, 6 of them missed.
    mixed = metrics(defects=30, missed=6, types=("scratch_head", "thread_top"))
    assert mixed.recall == pytest.approx(0.8)
    result = check_defect_type_recall(mixed, GATE.model_copy(update={"min_defect_recall": 0.75}))
    assert not result.passed, "overall 0.8 clears 0.75, but thread_top is caught 12 of 18"
    assert result.observed == pytest.approx(12 / 18)
    assert result.expected == ">= 0.75 for each defect type with >= 5 test images"
    assert result.message.startswith("below the floor: thread_top; scratch_head 12/12 = 1.0000")
    assert "thread_top 12/18 = 0.6667 (95% CI" in result.message
    own_floor = GATE.model_copy(update={"min_defect_recall": 0.75, "min_type_recall": 0.5})
    assert check_defect_type_recall(mixed, own_floor).passed


def test_a_defect_type_with_too_few_images_is_listed_but_not_gated() -> None:
    few = metrics(defects=12, missed=2, types=("scratch_head",) * 3 + ("thread_top",))
    result = check_defect_type_recall(few, GATE)
    assert result.passed, "thread_top, caught 2 of 4, has under 5 test images"
    assert result.message.endswith("; not gated (< 5 images): thread_top")
    assert result.observed == 1.0
    none = check_defect_type_recall(metrics(defects=4), GATE)
    assert none.passed
    assert none.message == "no defect type has 5 test images; not gated (< 5 images): scratch_head"


def test_roc_auc_must_reach_its_minimum_and_shows_its_interval() -> None:
    split = [
        LabeledImage(f"{i:064x}", f"raw/{i}", Label.BAD if i < 5 else Label.GOOD, None)
        for i in range(10)
    ]
    # One defect ranked below two good screws: AUROC 1 - 2/25 = 0.92.
    ranked = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.3, 0.25, 0.1, 0.1, 0.1], dtype=np.float32)
    scored = compute_metrics(split, ranked, threshold=0.5)
    result = check_roc_auc(scored, GATE)
    assert result.passed
    assert result.observed == pytest.approx(0.92)
    assert result.message.startswith("image ROC AUC 0.9200 (95% CI ")
    assert result.message.endswith("over 5 good and 5 defective test screws")
    assert scored.roc_auc_interval is not None
    assert scored.roc_auc_interval.low < 0.92 <= scored.roc_auc_interval.high
    assert not check_roc_auc(scored, GATE.model_copy(update={"min_roc_auc": 0.95})).passed
    one_class = check_roc_auc(metrics(10, defects=0), GATE)
    assert not one_class.passed
    assert "one class only" in one_class.message


def test_the_champion_comparison_covers_recall_too() -> None:
    """Fewer false alarms but more missed defects: more accurate, and still refused."""
    production = Comparison(version=3, metrics=metrics(defects=20, false_alarms=6))
    candidate = metrics(defects=20, missed=2)
    assert check_champion(candidate, production, GATE).passed
    result = check_champion_recall(candidate, production, GATE)
    assert not result.passed
    assert result.observed == pytest.approx(-0.1)
    assert result.message == (
        "defect recall 0.9000 vs production version 3's 1.0000 at its threshold 0.5 "
        "(difference -0.1000, allowed drop 0.02)"
    )
    lenient = GATE.model_copy(update={"max_recall_drop": 0.1})
    assert check_champion_recall(candidate, production, lenient).passed
    assert check_champion_recall(candidate, Comparison(), GATE).passed


def test_judge_lists_every_check_in_order() -> None:
    infra = check_infra("staging", 1, probability=0.5, failure=None)
    checks = judge(infra, metrics(false_alarms=4), Comparison(), GATE)
    assert [c.name for c in checks] == [
        "infra_validation",
        "test_split_size",
        "accuracy",
        "defect_recall",
        "defect_type_recall",
        "roc_auc",
        "champion_comparison",
        "champion_recall_comparison",
    ]
    assert all(c.passed for c in checks)


def test_thresholds_are_settings_and_the_report_records_only_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCREWOPS_EVALUATOR_MIN_ACCURACY", "0.97")
    monkeypatch.setenv("SCREWOPS_EVALUATOR_MAX_ACCURACY_DROP", "0.05")
    monkeypatch.setenv("SCREWOPS_EVALUATOR_MIN_ROC_AUC", "0.8")
    monkeypatch.setenv("SCREWOPS_EVALUATOR_STAGING_MODEL", "it-staging")
    settings = EvaluatorSettings()
    assert (settings.service_name, settings.metrics_port) == ("evaluator", 9105)
    assert settings.staging_model == "it-staging"
    rules = settings.rules().gate
    assert type(rules) is Gate
    assert (rules.min_accuracy, rules.max_accuracy_drop, rules.min_defect_recall) == (
        0.97,
        0.05,
        0.9,
    )
    assert not check_accuracy(metrics(false_alarms=4), rules).passed
    assert rules.min_roc_auc == 0.8
    # Unset, the per-type floor and the allowed recall drop follow their overall twins.
    assert (rules.type_recall_floor, rules.recall_drop_allowed) == (0.9, 0.05)
