"""Validation's pure parts: measuring an image, each assertion with the numbers that decide it,
near-duplicate groups, the stratified split, drift and the dataset digest."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
from screwops_contracts.datasets import (
    DEFECT_TYPES,
    ImageLabel,
    Label,
    LabelSet,
    Manifest,
    ManifestImage,
    SplitName,
    dataset_digest,
)
from screwops_contracts.models import ModelKind
from screwops_errors import InvalidInputError
from screwops_validation.checks import (
    check_enough_for_model,
    check_exact_duplicates,
    check_exact_duplicates_across_splits,
    check_images_decode,
    check_labels,
    check_min_per_class,
    check_near_duplicates,
    check_size_and_mode,
    check_split_drift,
    class_ratio,
    drift_figures,
    exact_duplicate_groups,
    ks_critical,
    ks_statistic,
)
from screwops_validation.config import Thresholds
from screwops_validation.measures import Measure, Sample, measure
from screwops_validation.report import NearDuplicates
from screwops_validation.service import digest_rows
from screwops_validation.split import (
    SPLITS,
    SplitUnit,
    cluster,
    split_counts,
    stratified_split,
)

from tests.unit.validation.builders import circle_pixels, encode

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RULES = Thresholds()


def sha(n: int) -> str:
    return f"{n:064x}"


def numbers(
    *,
    size: tuple[int, int] = (64, 64),
    mode: str = "L",
    brightness: float = 100.0,
    contrast: float = 30.0,
    phash: int = 0,
    digest: str = "",
) -> Measure:
    return Measure(
        width=size[0],
        height=size[1],
        mode=mode,
        brightness=brightness,
        contrast=contrast,
        sharpness=10.0,
        phash=phash,
        pixel_digest=digest or f"pixels-{brightness}-{contrast}-{phash}",
    )


def sample(
    n: int,
    label: Label = Label.GOOD,
    measured: Measure | None = None,
    *,
    defect_type: str | None = None,
    problem: str = "",
) -> Sample:
    image = ManifestImage(
        sha256=sha(n), key=f"raw/{sha(n)}", filename=f"{n}.png", width=64, height=64, format="PNG"
    )
    mark = ImageLabel(
        sha256=sha(n), label=label, defect_type=defect_type, source="manual", labeled_at=NOW
    )
    return Sample(image, mark, measured, problem)


# --- measuring ---------------------------------------------------------------------------------


def test_measure_keeps_numbers_that_describe_the_picture() -> None:
    flat = measure(encode(np.full((32, 48), 90, dtype=np.uint8)))
    assert (flat.width, flat.height, flat.mode) == (48, 32, "L")
    assert (flat.brightness, flat.contrast, flat.sharpness) == (90.0, 0.0, 0.0)

    disc = circle_pixels(1, bright=True)
    sharp = measure(encode(disc))
    wide = disc.astype(np.int32)
    box = (wide[:-1, :-1] + wide[1:, 1:] + wide[:-1, 1:] + wide[1:, :-1]) // 4
    blurred = measure(encode(box.astype(np.uint8)))
    assert sharp.sharpness > 2 * blurred.sharpness


def test_a_re_encoded_copy_has_new_bytes_but_the_same_pixel_digest_and_phash() -> None:
    pixels = circle_pixels(3, bright=False)
    original, copy = encode(pixels), encode(pixels, note="exported again")
    assert original != copy
    a, b = measure(original), measure(copy)
    assert (a.pixel_digest, a.phash) == (b.pixel_digest, b.phash)
    assert measure(encode(pixels, mode="RGB")).mode == "RGB"


def test_measure_refuses_what_does_not_decode() -> None:
    with pytest.raises(InvalidInputError, match="corrupt or truncated PNG"):
        measure(encode(circle_pixels(1, bright=True))[:200])


# --- the assertions ----------------------------------------------------------------------------


def test_images_decode_counts_the_broken_ones() -> None:
    fine = [sample(1, measured=numbers()), sample(2, measured=numbers())]
    assert check_images_decode(fine).passed
    result = check_images_decode([*fine, sample(3, problem="corrupt or truncated PNG image")])
    assert (result.passed, result.observed, result.expected) == (False, 1, "0 undecodable of 3")
    assert "3.png: corrupt or truncated PNG image" in result.message


def test_one_size_and_mode_or_a_declared_resize() -> None:
    same = [numbers(), numbers()]
    assert check_size_and_mode(same, RULES).passed

    odd_size = check_size_and_mode([*same, numbers(size=(32, 32))], RULES)
    assert (odd_size.passed, odd_size.observed) == (False, 1)
    assert "sizes 32x32: 1, 64x64: 2; modes L: 3" in odd_size.message

    odd_mode = check_size_and_mode([*same, numbers(mode="RGB")], RULES)
    assert (odd_mode.passed, odd_mode.observed) == (False, 1)

    resized = Thresholds(resize_to=128)
    assert check_size_and_mode([*same, numbers(size=(32, 32))], resized).passed
    assert not check_size_and_mode([*same, numbers(mode="RGB")], resized).passed

    declared = check_size_and_mode(same, Thresholds(expected_size=(128, 128)))
    assert (declared.passed, declared.observed) == (False, 2)
    assert declared.expected == "every image 128x128, mode L"


def versioned(*shas: int, excluded: tuple[int, ...] = ()) -> Manifest:
    return Manifest(
        dataset_id="screws",
        version=1,
        created_at=NOW,
        images=[sample(n).image for n in (*shas, *excluded)],
    )


def label_set(*marks: ImageLabel, excluded: tuple[int, ...] = ()) -> LabelSet:
    return LabelSet(
        dataset_id="screws", version=1, labels=list(marks), excluded=[sha(n) for n in excluded]
    )


def test_labels_complete_and_allowed_passes_a_clean_set_with_exclusions() -> None:
    manifest = versioned(1, 2, excluded=(3,))
    labels = label_set(sample(1).label, sample(2, Label.BAD).label, excluded=(3,))
    result = check_labels(manifest, labels, RULES)
    assert (result.passed, result.observed) == (True, 0)


def test_labels_complete_and_allowed_counts_every_problem() -> None:
    manifest = versioned(1, 2, 3, 4, 5)
    labels = label_set(
        sample(1).label,
        sample(2, Label.BAD, defect_type="dented").label,  # not an allowed defect type
        sample(3, Label.GOOD, defect_type="scratch_head").label,  # a good screw with a defect
        sample(4).label,
        sample(4, Label.BAD).label,  # labeled twice, differently
        sample(9).label,  # no such image
    )  # 5 is unlabeled
    result = check_labels(manifest, labels, RULES)
    assert (result.passed, result.observed) == (False, 5)
    assert "1 image(s) unlabeled: 5.png" in result.message
    assert "1 label(s) name no image of the version" in result.message
    assert "1 image(s) labeled differently twice: 4.png" in result.message
    assert "2 label(s) not allowed: 2.png: bad/dented, 3.png: good/scratch_head" in result.message


def test_labels_outside_the_allowed_set_fail() -> None:
    result = check_labels(
        versioned(1),
        label_set(sample(1, Label.BAD).label),
        Thresholds(allowed_labels=(Label.GOOD,)),
    )
    assert (result.passed, result.observed) == (False, 1)


def test_min_images_per_class_names_each_short_class() -> None:
    assert check_min_per_class({"good": 25, "bad": 20}, 20).passed
    result = check_min_per_class({"good": 25, "bad": 12}, 20)
    assert (result.passed, result.observed, result.expected) == (False, 12, ">= 20 per class")
    assert result.message == "class 'bad' has 12"


def test_the_class_ratio_is_reported_never_capped() -> None:
    assert class_ratio({"good": 361, "bad": 119}) == pytest.approx(3.0336)
    assert class_ratio({"good": 400, "bad": 20}) == 20.0
    assert class_ratio({"good": 31, "bad": 0}) is None


def per_split(
    train: tuple[int, int], validation: tuple[int, int], test: tuple[int, int]
) -> dict[SplitName, dict[str, int]]:
    """(good, bad) per split."""
    return {
        name: {"good": good, "bad": bad}
        for name, (good, bad) in zip(SPLITS, (train, validation, test), strict=True)
    }


def test_a_supervised_model_needs_defective_images_in_every_split() -> None:
    mvtec = check_enough_for_model(per_split((253, 83), (54, 18), (54, 18)), RULES)
    assert (mvtec.passed, mvtec.observed) == (True, 18)
    assert mvtec.message == "train 83, validation 18, test 18"
    twenty_to_one = check_enough_for_model(per_split((280, 14), (60, 3), (60, 3)), RULES)
    assert twenty_to_one.passed

    handful = check_enough_for_model(per_split((253, 3), (54, 1), (54, 1)), RULES)
    assert (handful.passed, handful.observed) == (False, 1)
    assert handful.message == (
        "too few defective images in validation, test for a supervised model: "
        "train 3, validation 1, test 1"
    )
    none = check_enough_for_model(per_split((253, 0), (54, 0), (54, 0)), RULES)
    assert (none.passed, none.observed) == (False, 0)
    assert none.message.startswith("no defective image: a supervised model has nothing to learn")
    assert "SCREWOPS_VALIDATION_MODEL_KIND=good_only" in none.message


def test_a_good_only_model_needs_good_images_to_set_its_threshold_and_no_defect() -> None:
    rules = Thresholds(model_kind=ModelKind.GOOD_ONLY)
    no_defects = check_enough_for_model(per_split((280, 0), (60, 0), (60, 0)), rules)
    assert (no_defects.passed, no_defects.observed) == (True, 60)

    few_good = check_enough_for_model(per_split((280, 0), (49, 5), (60, 5)), rules)
    assert (few_good.passed, few_good.observed) == (False, 49)
    assert "the validation split has 49 good image(s)" in few_good.message
    trained_defect = check_enough_for_model(per_split((280, 1), (60, 5), (60, 5)), rules)
    assert not trained_defect.passed
    assert "1 defective image(s) in train" in trained_defect.message


def test_exact_duplicates_are_identical_pictures_whatever_their_bytes() -> None:
    twin = numbers(digest="same")
    samples = [sample(1, measured=twin), sample(2, measured=twin), sample(3, measured=numbers())]
    groups = exact_duplicate_groups(samples)
    assert [[s.image.filename for s in g] for g in groups] == [["1.png", "2.png"]]
    result = check_exact_duplicates(groups, 0)
    assert (result.passed, result.observed) == (False, 1)
    assert "1.png = 2.png" in result.message
    assert check_exact_duplicates(groups, 1).passed
    assert check_exact_duplicates([], 0).passed


def test_exact_duplicates_across_splits_catch_a_picture_in_two_splits() -> None:
    twin = numbers(digest="same")
    samples = [sample(1, measured=twin), sample(2, measured=twin)]
    together = {sha(1): SplitName.TRAIN, sha(2): SplitName.TRAIN}
    assert check_exact_duplicates_across_splits(samples, together).passed
    apart = {sha(1): SplitName.TRAIN, sha(2): SplitName.TEST}
    result = check_exact_duplicates_across_splits(samples, apart)
    assert (result.passed, result.observed) == (False, 1)
    assert "pixels:same" in result.message


def near(total: int, across: int) -> NearDuplicates:
    return NearDuplicates(
        max_distance=4,
        total=total,
        within_split=total - across,
        across_splits=across,
        largest_group=2,
        pairs=[],
    )


def test_near_duplicates_within_a_split_are_reported_and_across_splits_fail() -> None:
    within = check_near_duplicates(near(3, 0), 0)
    assert (within.passed, within.observed) == (True, 0)
    assert "3 near-duplicate pair(s): 3 within a split, 0 across splits" in within.message
    across = check_near_duplicates(near(3, 1), 0)
    assert (across.passed, across.observed) == (False, 1)
    assert check_near_duplicates(near(3, 1), 1).passed


# --- drift -------------------------------------------------------------------------------------


def test_ks_statistic() -> None:
    assert ks_statistic([1, 2, 3], [1, 2, 3]) == 0.0
    assert ks_statistic([1, 2, 3], [10, 11]) == 1.0
    assert ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    assert ks_critical(100, 100, 0.05) == pytest.approx(1.358 * (2 / 100) ** 0.5, rel=1e-3)


def drift_samples(test_brightness: float) -> tuple[list[Sample], dict[str, SplitName]]:
    rng = np.random.default_rng(0)
    sizes = {SplitName.TRAIN: 140, SplitName.VALIDATION: 30, SplitName.TEST: 30}
    samples, assignments, n = [], {}, 0
    for split, count in sizes.items():
        centre = test_brightness if split == SplitName.TEST else 100.0
        for value in rng.normal(centre, 10, count):
            n += 1
            samples.append(sample(n, measured=numbers(brightness=float(value))))
            assignments[sha(n)] = split
    return samples, assignments


def test_split_drift_passes_splits_drawn_alike() -> None:
    samples, assignments = drift_samples(100.0)
    figures = drift_figures(samples, assignments, RULES)
    assert len(figures) == 6  # brightness and contrast, three pairs of splits
    result = check_split_drift(figures, split_counts(assignments), RULES)
    assert result.passed, result.message


def test_split_drift_fails_a_shifted_split_with_its_ks() -> None:
    samples, assignments = drift_samples(125.0)
    figures = drift_figures(samples, assignments, RULES)
    result = check_split_drift(figures, split_counts(assignments), RULES)
    assert not result.passed
    assert result.observed is not None
    assert result.observed > 0.6
    assert "brightness train vs test: KS" in result.message
    assert "brightness validation vs test: KS" in result.message
    failed = {(f.metric, f.a, f.b) for f in figures if not f.passed}
    assert failed == {
        ("brightness", SplitName.TRAIN, SplitName.TEST),
        ("brightness", SplitName.VALIDATION, SplitName.TEST),
    }


def test_small_splits_are_judged_by_the_critical_value_not_the_bound() -> None:
    [figure] = [
        f
        for f in drift_figures(
            [sample(1, measured=numbers()), sample(2, measured=numbers(brightness=200))],
            {sha(1): SplitName.TRAIN, sha(2): SplitName.TEST},
            RULES,
        )
        if f.metric == "brightness"
    ]
    assert figure.ks == 1.0
    assert figure.threshold > 1.0
    assert figure.passed


def test_split_drift_fails_when_a_split_is_empty() -> None:
    samples = [sample(1, measured=numbers()), sample(2, measured=numbers())]
    assignments = {sha(1): SplitName.TRAIN, sha(2): SplitName.VALIDATION}
    result = check_split_drift(
        drift_figures(samples, assignments, RULES), split_counts(assignments), RULES
    )
    assert not result.passed
    assert "['test'] empty" in result.message


# --- near-duplicate groups and the split -------------------------------------------------------


def test_cluster_chains_near_duplicates_and_joins_equal_pixels() -> None:
    hashes = [0, 0b111, 0b111111, 0xFFFF_FFFF << 32, (0xFFFF_FFFF << 32) | 1, 0xFFFF_0000]
    digests = ["a", "b", "c", "d", "e", "a"]
    # 0~1 (3 bits), 1~2 (3 bits): a chain; 3~4 (1 bit); 5 has the same pixels as 0.
    assert cluster(hashes, digests, 3) == [0, 0, 0, 3, 3, 0]
    assert cluster(hashes, ["a", "b", "c", "d", "e", "f"], 0) == [0, 1, 2, 3, 4, 5]


def test_cluster_handles_more_images_than_one_block() -> None:
    rng = np.random.default_rng(0)
    hashes = [int(h) for h in rng.integers(0, 2**63, 600, dtype=np.int64)]
    hashes[599] = hashes[1] ^ 0b11  # a near twin far apart in the list
    groups = cluster(hashes, [str(i) for i in range(600)], 2)
    assert groups[599] == groups[1] == 1
    assert Counter(groups).most_common(1)[0][1] == 2


def units(good: int, bad_per_defect: int) -> list[SplitUnit]:
    made = [SplitUnit(sha(n), "good", None, n) for n in range(good)]
    for d, defect in enumerate(DEFECT_TYPES):
        for i in range(bad_per_defect):
            n = 10_000 + 100 * d + i
            made.append(SplitUnit(sha(n), "bad", defect, n))
    return made


def test_the_split_is_deterministic_for_a_seed_and_changes_with_it() -> None:
    made = units(100, 12)
    first = stratified_split(made, RULES.fractions, 7)
    assert stratified_split(list(reversed(made)), RULES.fractions, 7) == first
    assert stratified_split(made, RULES.fractions, 8) != first
    assert set(first) == {u.sha256 for u in made}


@pytest.mark.parametrize(("good", "bad_per_defect", "seed"), [(100, 12, 0), (37, 5, 3), (20, 4, 9)])
def test_each_class_and_stratum_keeps_the_fractions(
    good: int, bad_per_defect: int, seed: int
) -> None:
    made = units(good, bad_per_defect)
    assignments = stratified_split(made, RULES.fractions, seed)
    for label in ("good", "bad"):
        mine = [u for u in made if u.label == label]
        counts = Counter(assignments[u.sha256] for u in mine)
        for split, fraction in zip(SPLITS, RULES.fractions, strict=True):
            assert abs(counts[split] - fraction * len(mine)) <= 1, (label, split, counts)
    for defect in DEFECT_TYPES:
        mine = [u for u in made if u.defect_type == defect]
        counts = Counter(assignments[u.sha256] for u in mine)
        for split, fraction in zip(SPLITS, RULES.fractions, strict=True):
            assert abs(counts[split] - fraction * len(mine)) <= 2, (defect, split, counts)


def test_a_near_duplicate_group_lands_in_one_split() -> None:
    made = units(60, 8)
    grouped = [
        replace(u, group=0) if i < 5 else replace(u, group=7) if 30 <= i < 33 else u
        for i, u in enumerate(made)
    ]
    for seed in range(10):
        assignments = stratified_split(grouped, RULES.fractions, seed)
        assert len({assignments[u.sha256] for u in grouped if u.group == 0}) == 1
        assert len({assignments[u.sha256] for u in grouped if u.group == 7}) == 1


def within_fractions(assignments: dict[str, SplitName], made: list[SplitUnit], slack: int) -> None:
    for label in ("good", "bad"):
        mine = [u for u in made if u.label == label]
        counts = Counter(assignments[u.sha256] for u in mine)
        for split, fraction in zip(SPLITS, RULES.fractions, strict=True):
            assert abs(counts[split] - fraction * len(mine)) <= slack, (label, split, counts)


def test_images_keep_their_split_in_every_later_version_as_images_are_added() -> None:
    v1 = units(60, 6)
    first = stratified_split(v1, RULES.fractions, 0)
    old = v1[7]
    twin = SplitUnit(sha(50_000), old.label, old.defect_type, old.group)  # a near-duplicate
    v2 = [
        *v1,
        twin,
        *[replace(u, sha256=sha(u.group + 20_000), group=u.group + 20_000) for u in v1],
    ]

    second = stratified_split(v2, RULES.fractions, 0, previous=first)

    assert {u.sha256: second[u.sha256] for u in v1} == first
    assert second[twin.sha256] == first[old.sha256]
    within_fractions(second, v2, slack=1)
    # Placed from scratch, the grown set would move images a version already tested on.
    fresh = stratified_split(v2, RULES.fractions, 0)
    assert {u.sha256: fresh[u.sha256] for u in v1} != first


def test_a_group_joining_images_of_two_splits_puts_its_new_images_furthest_from_training() -> None:
    trained, tested = SplitUnit(sha(1), "good", None, 1), SplitUnit(sha(2), "good", None, 1)
    bridge = SplitUnit(sha(3), "good", None, 1)
    previous = {sha(1): SplitName.TRAIN, sha(2): SplitName.TEST}
    assignments = stratified_split([trained, tested, bridge], RULES.fractions, 0, previous=previous)
    assert assignments == {sha(1): SplitName.TRAIN, sha(2): SplitName.TEST, sha(3): SplitName.TEST}


def test_a_providers_test_images_stay_out_of_training_where_it_gave_training_images() -> None:
    train_good = [SplitUnit(sha(n), "good", None, n, "train") for n in range(80)]
    test_good = [SplitUnit(sha(n), "good", None, n, "test") for n in range(100, 120)]
    test_bad = [SplitUnit(sha(n), "bad", "thread_top", n, "test") for n in range(200, 240)]
    made = [*train_good, *test_good, *test_bad]
    assignments = stratified_split(made, RULES.fractions, 0)
    assert {assignments[u.sha256] for u in test_good} == {SplitName.VALIDATION, SplitName.TEST}
    # MVTec's train/ holds no defect: a supervised model still learns from its test/ defects.
    assert SplitName.TRAIN in {assignments[u.sha256] for u in test_bad}
    within_fractions(assignments, made, slack=1)


def test_a_good_only_split_never_trains_on_a_defect() -> None:
    made = units(100, 8)
    assignments = stratified_split(made, RULES.fractions, 0, model_kind=ModelKind.GOOD_ONLY)
    defects = Counter(assignments[u.sha256] for u in made if u.label == "bad")
    assert defects[SplitName.TRAIN] == 0
    assert abs(defects[SplitName.VALIDATION] - defects[SplitName.TEST]) <= 1
    good = Counter(assignments[u.sha256] for u in made if u.label == "good")
    assert good == {SplitName.TRAIN: 70, SplitName.VALIDATION: 15, SplitName.TEST: 15}


def test_the_dataset_digest_names_images_labels_and_splits() -> None:
    samples = [sample(1, measured=numbers()), sample(2, Label.BAD, measured=numbers())]
    assignments = {sha(1): SplitName.TRAIN, sha(2): SplitName.TEST}
    digest = dataset_digest(digest_rows(samples, assignments))
    assert digest == dataset_digest(digest_rows(list(reversed(samples)), assignments))
    assert len(digest) == 64
    moved = {sha(1): SplitName.TRAIN, sha(2): SplitName.VALIDATION}
    assert dataset_digest(digest_rows(samples, moved)) != digest
    relabeled = [samples[0], sample(2, Label.BAD, numbers(), defect_type="thread_top")]
    assert dataset_digest(digest_rows(relabeled, assignments)) != digest
    unsplit = {sha(1): SplitName.TRAIN}
    assert digest_rows(samples, unsplit) == [(sha(1), Label.GOOD, None, SplitName.TRAIN)]
