"""The quality benchmark's pure parts: the sets' slicing and cache, the scoring of the gateway's
answers with their intervals, and the floors' verdicts (no servers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from screwops_contracts.models import ModelKind
from screwops_synth import DEFECT_TYPES, HOLDOUT, MVTEC_SCREW

from benchmarks.bench_quality import (
    FLOOR_NAMES,
    Answer,
    Item,
    KindResult,
    SetQuality,
    changed_gates,
    floors,
    kind_env,
    model_name,
    parse_args,
    plan_sets,
    recall_within_false_rejects,
    render,
    report,
    reusable,
    score_set,
    select,
    set_dir,
    sliced,
    write_figures,
)


def test_the_full_sets_unless_sliced() -> None:
    mvtec, holdout, shifted = plan_sets(1024, holdout_good=None, holdout_per_type=None)
    assert mvtec.preset == MVTEC_SCREW
    assert holdout.preset == HOLDOUT
    assert (holdout.style, shifted.style) == ("default", "shifted")
    assert shifted.preset == holdout.preset


def test_a_slice_takes_its_counts_and_keeps_the_seed() -> None:
    _, holdout, shifted = plan_sets(256, holdout_good=40, holdout_per_type=8)
    assert holdout.preset.counts == {"test/good": 40, **{f"test/{d}": 8 for d in DEFECT_TYPES}}
    assert holdout.preset.seed == HOLDOUT.seed
    assert shifted.preset.counts == holdout.preset.counts
    assert holdout.size == 256


@pytest.mark.parametrize(("good", "per_type"), [(1001, None), (None, 0), (None, 101)])
def test_a_slice_beyond_the_set_is_refused(good: int | None, per_type: int | None) -> None:
    with pytest.raises(ValueError, match="holds 1 to"):
        sliced(HOLDOUT, good=good, per_type=per_type)


def test_a_larger_render_serves_a_smaller_slice_but_not_the_ingested_set() -> None:
    _, small, _ = plan_sets(256, holdout_good=10, holdout_per_type=2)
    _, large, _ = plan_sets(256, holdout_good=20, holdout_per_type=4)
    assert reusable(large.params(), small.params(), exact=False)
    assert not reusable(small.params(), large.params(), exact=False)
    assert not reusable(large.params(), small.params(), exact=True)
    assert reusable(small.params(), small.params(), exact=True)
    assert not reusable(None, small.params(), exact=False)
    other_size = plan_sets(512, holdout_good=20, holdout_per_type=4)[1]
    assert not reusable(other_size.params(), small.params(), exact=False)


def test_select_takes_the_first_images_by_number(tmp_path: Path) -> None:
    for folder, count in (("test/good", 1002), ("test/scratch_head", 3)):
        (tmp_path / folder).mkdir(parents=True)
        for index in range(count):
            (tmp_path / folder / f"{index:03d}.png").write_bytes(b"")
    (tmp_path / "test/scratch_head/000_mask.txt").write_bytes(b"")
    items = select(tmp_path, {"test/good": 1001, "test/scratch_head": 2})
    good = [item.path.name for item in items if item.defect_type is None]
    assert good[-3:] == ["998.png", "999.png", "1000.png"]
    assert len(good) == 1001
    assert [(i.path.name, i.defect_type) for i in items[-2:]] == [
        ("000.png", "scratch_head"),
        ("001.png", "scratch_head"),
    ]
    with pytest.raises(ValueError, match="holds 3 images, 4 asked"):
        select(tmp_path, {"test/scratch_head": 4})


def test_render_reuses_a_cached_set_and_renders_a_changed_one(tmp_path: Path) -> None:
    _, holdout, _ = plan_sets(64, holdout_good=2, holdout_per_type=1)
    console = Console(file=None, quiet=True)
    out = render(tmp_path, holdout, workers=1, console=console)
    assert out == set_dir(tmp_path, holdout)
    assert json.loads(out.with_suffix(".json").read_text()) == holdout.params()
    first = (out / "test/good/000.png").read_bytes()
    (out / "test/good/marker").write_bytes(b"kept")
    assert render(tmp_path, holdout, workers=1, console=console) == out
    assert (out / "test/good/marker").is_file()
    _, more, _ = plan_sets(64, holdout_good=3, holdout_per_type=1)
    render(tmp_path, more, workers=1, console=console)
    assert not (out / "test/good/marker").exists()
    assert (out / "test/good/000.png").read_bytes() == first
    assert len(select(out, more.preset.counts)) == 3 + len(DEFECT_TYPES)


def items_of(good: int, defective: dict[str, int]) -> list[Item]:
    items = [Item(Path(f"good/{i}.png"), None) for i in range(good)]
    for defect, count in defective.items():
        items += [Item(Path(f"{defect}/{i}.png"), defect) for i in range(count)]
    return items


def test_scores_at_the_threshold_with_wilson_and_bootstrap_intervals() -> None:
    items = items_of(10, {"thread_top": 4, "scratch_head": 6})
    good = [0.1] * 9 + [0.7]  # one false reject
    defective = [0.9, 0.9, 0.9, 0.2] + [0.8] * 6  # one thread_top missed
    answers = [Answer(p, 0.5) for p in good + defective]
    quality = score_set("holdout", items, answers)
    m = quality.metrics
    assert (m.images, m.good, m.defective, m.threshold) == (20, 10, 10, 0.5)
    assert m.accuracy == pytest.approx(18 / 20)
    assert m.recall == pytest.approx(0.9)
    assert quality.false_reject_rate == pytest.approx(0.1)
    # Wilson's 95 % interval of 1 in 10: 0.0179 to 0.4042.
    assert quality.false_reject_interval is not None
    assert quality.false_reject_interval.low == pytest.approx(0.01787, abs=1e-4)
    assert quality.false_reject_interval.high == pytest.approx(0.40415, abs=1e-4)
    assert m.recall_interval is not None
    assert m.recall_interval.method == "wilson"
    assert m.per_defect_type["thread_top"].recall == pytest.approx(0.75)
    assert m.per_defect_type["scratch_head"].recall == 1.0
    # 9 of 10 defects outscore all 10 good screws, the 10th (0.2) outscores 9: 99 of 100 pairs.
    assert m.roc_auc == pytest.approx(0.99)
    assert m.roc_auc_interval is not None
    assert m.roc_auc_interval.method == "bootstrap"
    assert m.roc_auc_interval.low <= 0.99 <= m.roc_auc_interval.high
    assert (quality.no_part, quality.errors) == (0, {})


def test_no_screw_is_a_rejection_and_a_failed_call_is_left_out() -> None:
    items = items_of(3, {"scratch_neck": 2})
    answers = [
        Answer(0.1, 0.4),
        Answer(None, None),  # no screw found: rejected at probability 1.0
        Answer(None, None, "DEADLINE_EXCEEDED"),
        Answer(0.9, 0.4),
        Answer(None, None),
    ]
    quality = score_set("holdout", items, answers)
    assert quality.metrics.images == 4
    assert quality.no_part == 2
    assert quality.errors == {"DEADLINE_EXCEEDED": 1}
    assert quality.metrics.confusion.false_positives == 1
    assert quality.metrics.recall == 1.0


def test_answers_with_two_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="one threshold"):
        score_set("holdout", items_of(2, {}), [Answer(0.1, 0.4), Answer(0.2, 0.5)])


def test_best_recall_within_the_false_reject_ceiling() -> None:
    good = np.linspace(0.0, 0.99, 100)  # the two highest: 0.98 and 0.99
    defective = np.array([0.985, 0.995, 0.5, 0.97])
    # 2 % of 100 good screws may be rejected: the threshold may sit just above 0.97.
    assert recall_within_false_rejects(good, defective, 0.02) == pytest.approx(0.5)
    assert recall_within_false_rejects(good, defective, 0.0) == pytest.approx(0.25)
    assert recall_within_false_rejects(good, defective, 1.0) == 1.0
    assert recall_within_false_rejects(good, np.array([]), 0.02) is None


def quality(good: list[float], defective: dict[str, list[float]], threshold: float) -> SetQuality:
    items = items_of(len(good), {d: len(s) for d, s in defective.items()})
    scores = good + [s for values in defective.values() for s in values]
    return score_set("holdout", items, [Answer(s, threshold) for s in scores])


def test_every_floor_passes_on_a_separating_model_deployed_in_time() -> None:
    separating = quality(
        [0.01 * i for i in range(50)], {d: [0.9] * 10 for d in DEFECT_TYPES}, threshold=0.6
    )
    checked = floors(separating, 240.0, training_s=200.0)
    assert [f.name for f in checked] == list(FLOOR_NAMES)
    assert all(f.passed for f in checked), checked


def test_the_floors_say_why_they_fail() -> None:
    holdout = quality(
        [0.1] * 100,
        {
            **{d: [0.9] * 10 for d in DEFECT_TYPES if d != "thread_side"},
            "thread_side": [0.9] * 8 + [0.3] * 2,
        },
        threshold=0.5,
    )
    auroc, operating, types, deploy = floors(holdout, 420.0, training_s=330.0)
    assert auroc.passed
    assert operating.passed, operating  # recall 0.96 with no false reject
    assert not types.passed
    assert types.why == "below: thread_side 0.80"
    assert not deploy.passed
    assert deploy.why == "over by 120 s (training took 330 s of it)"


def test_a_threshold_off_the_operating_point_is_told_from_weak_scores() -> None:
    missed = quality([0.1] * 100, {d: [0.9] * 10 for d in DEFECT_TYPES}, threshold=0.95)
    _, operating, _, _ = floors(missed, 100.0)
    assert not operating.passed
    assert "the scores allow it" in operating.why
    weak = quality([0.1] * 50 + [0.8] * 50, {d: [0.7] * 10 for d in DEFECT_TYPES}, threshold=0.5)
    auroc, operating, _, _ = floors(weak, 100.0)
    assert not auroc.passed
    assert auroc.why
    assert not operating.passed
    assert "the scores themselves fall short" in operating.why


def test_a_kind_not_deployed_fails_every_floor_with_the_gates_reason() -> None:
    checked = floors(None, None, not_deployed="rejected (model.rejected): min_defect_recall")
    assert [f.passed for f in checked] == [False] * len(FLOOR_NAMES)
    assert {f.why for f in checked} == {"rejected (model.rejected): min_defect_recall"}


def test_each_kind_runs_under_its_own_model_name_and_kind() -> None:
    env = kind_env(ModelKind.GOOD_ONLY)
    assert (
        env["SCREWOPS_TRAINER_MODEL_KIND"] == env["SCREWOPS_VALIDATION_MODEL_KIND"] == "good_only"
    )
    assert env["SCREWOPS_TRAINER_MODEL_NAME"] == env["SCREWOPS_GATEWAY_MODEL_NAME"]
    assert model_name(ModelKind.GOOD_ONLY) != model_name(ModelKind.SUPERVISED)
    assert env["SCREWOPS_GATEWAY_IMAGE_SAMPLE_RATE"] == "0"


def test_changed_gates_are_the_evaluators_variables_only() -> None:
    env = {"SCREWOPS_EVALUATOR_MIN_ROC_AUC": "0.5", "SCREWOPS_TRAINER_MODEL_KIND": "x", "HOME": "/"}
    assert changed_gates(env) == {"SCREWOPS_EVALUATOR_MIN_ROC_AUC": "0.5"}


def test_arguments() -> None:
    args = parse_args(["--size", "256", "--kinds", "good_only", "--holdout-good", "50"])
    assert (args.size, args.kinds, args.holdout_good) == (256, [ModelKind.GOOD_ONLY], 50)
    assert parse_args([]).kinds == [ModelKind.SUPERVISED, ModelKind.GOOD_ONLY]
    with pytest.raises(SystemExit):
        parse_args(["--kinds", "unsupervised"])


def test_the_report_and_the_figures_of_a_deployed_and_a_rejected_kind(tmp_path: Path) -> None:
    deployed = KindResult(
        ModelKind.SUPERVISED,
        model_name(ModelKind.SUPERVISED),
        "bench-quality-supervised-1",
        outcome="deployed",
        model_version=3,
        threshold=0.6,
        training_s=200.0,
        ingest_to_deployed_s=250.0,
        sets={
            "holdout": quality([0.1] * 50, {d: [0.9] * 10 for d in DEFECT_TYPES}, 0.6),
            "holdout_shifted": quality([0.1] * 45 + [0.7] * 5, {"thread_top": [0.5] * 10}, 0.6),
        },
    )
    rejected = KindResult(
        ModelKind.GOOD_ONLY,
        model_name(ModelKind.GOOD_ONLY),
        "bench-quality-good-only-1",
        outcome="rejected (model.rejected)",
        reason="min_roc_auc: roc_auc 0.74 < 0.95",
        gate_metrics={"roc_auc": 0.74, "roc_auc_ci_low": 0.6},
    )
    console = Console(record=True, width=200)
    assert not report([deployed, rejected], console)
    text = console.export_text()
    assert "rejected (model.rejected): min_roc_auc: roc_auc 0.74 < 0.95" in text
    assert "the evaluator's figures: roc_auc 0.740" in text
    assert report([deployed], Console(quiet=True))
    specs = plan_sets(64, holdout_good=None, holdout_per_type=None)
    out = tmp_path / "figures.json"
    write_figures(out, specs, {s.name: tmp_path / s.name for s in specs}, {}, [deployed, rejected])
    figures = json.loads(out.read_text())
    kinds = figures["kinds"]
    assert kinds["supervised"]["sets"]["holdout"]["false_reject_rate"] == 0.0
    assert kinds["supervised"]["sets"]["holdout_shifted"]["metrics"]["recall"] == 0.0
    assert [f["passed"] for f in kinds["supervised"]["floors"]] == [True] * 4
    assert [f["passed"] for f in kinds["good_only"]["floors"]] == [False] * 4
    assert figures["sets"]["holdout"]["seed"] == HOLDOUT.seed
