"""The data assertions, each a pure function that returns its verdict with the numbers.

Every assertion is an :class:`AssertionResult` (name, passed, observed, expected, message), so the
report, the ``dataset.rejected`` event and a person reading either see why a version failed.
The drift figures and the per-class statistics the report shows are computed here too.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from screwops_contracts import AssertionResult, SplitCounts
from screwops_contracts.datasets import ImageLabel, Label, LabelSet, Manifest, SplitName
from screwops_contracts.models import ModelKind

from screwops_validation.config import Thresholds
from screwops_validation.measures import Measure, Sample
from screwops_validation.report import ClassStats, DriftFigure, NearDuplicates, Summary
from screwops_validation.split import SPLITS

DRIFT_METRICS = ("brightness", "contrast")
# Names of the assertions, in the order the report lists them.
IMAGES_DECODE = "images_decode"
SINGLE_SIZE_AND_MODE = "single_size_and_mode"
LABELS_COMPLETE_AND_ALLOWED = "labels_complete_and_allowed"
MIN_IMAGES_PER_CLASS = "min_images_per_class"
ENOUGH_FOR_MODEL = "enough_for_model"
NO_EXACT_DUPLICATES = "no_exact_duplicates"
NO_EXACT_DUPLICATES_ACROSS_SPLITS = "no_exact_duplicates_across_splits"
NEAR_DUPLICATES = "near_duplicates"
SPLIT_DRIFT = "split_drift"

_LISTED = 5  # names quoted in one assertion message before "and N more"


# --- the assertions ----------------------------------------------------------------------------


def check_images_decode(samples: Sequence[Sample]) -> AssertionResult:
    """Every labeled image must be readable: a training run must not meet a broken file."""
    broken = [s for s in samples if s.measure is None]
    return AssertionResult(
        name=IMAGES_DECODE,
        passed=not broken,
        observed=len(broken),
        expected=f"0 undecodable of {len(samples)}",
        message=_listing(
            f"{len(broken)} image(s) did not decode",
            [f"{s.image.filename}: {s.problem}" for s in broken],
        ),
    )


def check_size_and_mode(measures: Sequence[Measure], rules: Thresholds) -> AssertionResult:
    """One size and one mode (or a declared resize): a camera or format change shows here."""
    sizes = Counter((m.width, m.height) for m in measures)
    modes = Counter(m.mode for m in measures)
    size = rules.expected_size or _most_common(sizes)
    mode = rules.expected_mode or _most_common(modes)
    off = sum(
        1
        for m in measures
        if m.mode != mode or (rules.resize_to is None and (m.width, m.height) != size)
    )
    if rules.resize_to is not None:
        expected = f"one mode ({mode}); sizes vary: declared resize to {rules.resize_to}px"
    elif size is None:
        expected = "one size and one mode"
    else:
        expected = f"every image {size[0]}x{size[1]}, mode {mode}"
    seen = "sizes {}; modes {}".format(
        ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(sizes.items())),
        ", ".join(f"{m}: {n}" for m, n in sorted(modes.items())),
    )
    return AssertionResult(
        name=SINGLE_SIZE_AND_MODE,
        passed=off == 0,
        observed=off,
        expected=expected,
        message=f"{off} of {len(measures)} image(s) differ; seen: {seen}" if off else seen,
    )


def check_labels(manifest: Manifest, labels: LabelSet, rules: Thresholds) -> AssertionResult:
    """Every image is labeled (or excluded) exactly once, with a label and defect type allowed.

    A label naming an image outside the manifest, or an image labeled twice differently, means
    the label set and the version disagree: neither can be trusted to train on.
    """
    known = {image.sha256: image.filename for image in manifest.images}
    given: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
    for label in labels.labels:
        given[label.sha256].add((label.label.value, label.defect_type))
    excluded = set(labels.excluded)
    problems: list[str] = []
    unlabeled = [name for sha, name in known.items() if sha not in given and sha not in excluded]
    if unlabeled:
        problems.append(_listing(f"{len(unlabeled)} image(s) unlabeled", sorted(unlabeled)))
    outside = sorted(sha[:12] for sha in given.keys() - known.keys())
    if outside:
        problems.append(_listing(f"{len(outside)} label(s) name no image of the version", outside))
    conflicting = sorted(known.get(sha, sha[:12]) for sha, seen in given.items() if len(seen) > 1)
    if conflicting:
        problems.append(
            _listing(f"{len(conflicting)} image(s) labeled differently twice", conflicting)
        )
    allowed = {label.value for label in rules.allowed_labels}
    disallowed = sorted(
        f"{known.get(label.sha256, label.sha256[:12])}: {label.label.value}/{label.defect_type}"
        for label in labels.labels
        if label.label.value not in allowed or not _defect_allowed(label, rules)
    )
    if disallowed:
        problems.append(_listing(f"{len(disallowed)} label(s) not allowed", disallowed))
    count = len(unlabeled) + len(outside) + len(conflicting) + len(disallowed)
    return AssertionResult(
        name=LABELS_COMPLETE_AND_ALLOWED,
        passed=count == 0,
        observed=count,
        expected=f"every image labeled once, as one of {', '.join(sorted(allowed))}; defect "
        f"types ({', '.join(sorted(rules.allowed_defect_types))}) on 'bad' only",
        message="; ".join(problems) or f"{len(labels.labels)} labels, {len(excluded)} excluded",
    )


def check_min_per_class(counts: Mapping[str, int], minimum: int) -> AssertionResult:
    """Each class ``counts`` names needs enough images to learn from and still fill every split
    (a good-only model's: only the good one)."""
    short = {label: n for label, n in sorted(counts.items()) if n < minimum}
    return AssertionResult(
        name=MIN_IMAGES_PER_CLASS,
        passed=not short,
        observed=min(counts.values(), default=0),
        expected=f">= {minimum} per class",
        message="; ".join(f"class {label!r} has {n}" for label, n in short.items())
        or ", ".join(f"{label}: {n}" for label, n in sorted(counts.items())),
    )


def class_ratio(counts: Mapping[str, int]) -> float | None:
    """Majority over minority class size, for the report: imbalance is normal on a line (a
    defect in twenty screws is a bad day), so it is reported, never capped. None when a class
    is empty."""
    if len(counts) < 2 or min(counts.values()) == 0:
        return None
    return round(max(counts.values()) / min(counts.values()), 4)


def check_enough_for_model(
    per_split: Mapping[SplitName, Mapping[str, int]], rules: Thresholds
) -> AssertionResult:
    """What makes the model of ``rules.model_kind`` unusable, rather than a class ratio.

    Supervised: every split needs defective images, to learn from (train), to choose the
    threshold on (validation) and to score recall on (test). Good-only: no defect is needed at
    all, and none may be trained on (the model learns the good screw alone); the validation split
    needs enough good images to set the threshold for 1 % false rejects.
    """
    bad, good = Label.BAD.value, Label.GOOD.value
    if rules.model_kind == ModelKind.GOOD_ONLY:
        validation_good = per_split[SplitName.VALIDATION].get(good, 0)
        trained_defects = per_split[SplitName.TRAIN].get(bad, 0)
        problems = []
        if validation_good < rules.min_good_for_threshold:
            problems.append(
                f"the validation split has {validation_good} good image(s): too few to set a "
                f"threshold at 1 % false rejects"
            )
        if trained_defects:
            problems.append(
                f"{trained_defects} defective image(s) in train, kept there by an earlier "
                "version's split: a good-only model would learn them as good"
            )
        return AssertionResult(
            name=ENOUGH_FOR_MODEL,
            passed=not problems,
            observed=validation_good,
            expected=f"good-only model: >= {rules.min_good_for_threshold} good in validation; "
            "no defective image in train",
            message="; ".join(problems)
            or f"{validation_good} good in validation; defects in validation/test only: "
            + _per_split(per_split, bad),
        )
    counts = {name: per_split[name].get(bad, 0) for name in SPLITS}
    short = [name.value for name, n in counts.items() if n < rules.min_defective_per_split]
    if not any(counts.values()):
        message = (
            "no defective image: a supervised model has nothing to learn defects from "
            "(a good-only model accepts this set: SCREWOPS_VALIDATION_MODEL_KIND=good_only)"
        )
    elif short:
        message = (
            f"too few defective images in {', '.join(short)} for a supervised model: "
            + _per_split(per_split, bad)
        )
    else:
        message = _per_split(per_split, bad)
    return AssertionResult(
        name=ENOUGH_FOR_MODEL,
        passed=not short,
        observed=min(counts.values()),
        expected=f"supervised model: >= {rules.min_defective_per_split} defective in each of "
        "train, validation, test",
        message=message,
    )


def _per_split(per_split: Mapping[SplitName, Mapping[str, int]], label: str) -> str:
    return ", ".join(f"{name.value} {per_split[name].get(label, 0)}" for name in SPLITS)


def exact_duplicate_groups(samples: Sequence[Sample]) -> list[list[Sample]]:
    """Samples that are the same picture: equal pixels, whatever their file bytes."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if sample.measure is not None:
            groups[sample.measure.pixel_digest].append(sample)
    return [
        sorted(group, key=lambda s: (s.image.filename, s.image.sha256))
        for _, group in sorted(groups.items())
        if len(group) > 1
    ]


def check_exact_duplicates(groups: Sequence[Sequence[Sample]], allowed: int) -> AssertionResult:
    """A picture counted twice inflates its class and weights training towards it."""
    copies = sum(len(group) - 1 for group in groups)
    return AssertionResult(
        name=NO_EXACT_DUPLICATES,
        passed=copies <= allowed,
        observed=copies,
        expected=f"<= {allowed} redundant copies of identical pictures",
        message=_listing(
            f"{copies} redundant cop(ies) in {len(groups)} group(s)",
            [" = ".join(s.image.filename for s in group) for group in groups],
        )
        if copies
        else "no identical pictures",
    )


def check_exact_duplicates_across_splits(
    samples: Sequence[Sample], assignments: Mapping[str, SplitName]
) -> AssertionResult:
    """The same file or the same pixels in two splits would test on training data.

    The split keeps both together by construction; this checks that construction held.
    """
    splits_of: dict[str, set[SplitName]] = defaultdict(set)
    for sample in samples:
        split = assignments.get(sample.image.sha256)
        if split is None or sample.measure is None:
            continue
        splits_of[f"sha256:{sample.image.sha256}"].add(split)
        splits_of[f"pixels:{sample.measure.pixel_digest}"].add(split)
    leaking = sorted(key for key, splits in splits_of.items() if len(splits) > 1)
    return AssertionResult(
        name=NO_EXACT_DUPLICATES_ACROSS_SPLITS,
        passed=not leaking,
        observed=len(leaking),
        expected="0 files or pictures in more than one split",
        message=_listing(f"{len(leaking)} in more than one split", leaking) if leaking else "",
    )


def check_near_duplicates(found: NearDuplicates, allowed_across: int) -> AssertionResult:
    """Near-duplicates across splits are leakage and fail; within one split they are reported."""
    return AssertionResult(
        name=NEAR_DUPLICATES,
        passed=found.across_splits <= allowed_across,
        observed=found.across_splits,
        expected=f"<= {allowed_across} pairs across splits (pHash distance <= "
        f"{found.max_distance}); pairs within a split are reported only",
        message=f"{found.total} near-duplicate pair(s): {found.within_split} within a split, "
        f"{found.across_splits} across splits; largest group {found.largest_group}",
    )


def check_split_drift(
    figures: Sequence[DriftFigure], counts: SplitCounts, rules: Thresholds
) -> AssertionResult:
    """The splits must look alike, or validation and test scores say little about production."""
    empty = [name.value for name in SPLITS if getattr(counts, name.value) == 0]
    top = max(figures, key=lambda f: f.ks, default=None)
    over = [f for f in figures if not f.passed]
    if empty:
        message = f"split(s) {empty} empty: drift cannot be measured"
    elif over:
        message = "; ".join(
            f"{f.metric} {f.a} vs {f.b}: KS {f.ks:.3f} > {f.threshold:.3f}" for f in over
        )
    elif top is not None:
        message = (
            f"largest KS {top.ks:.3f} ({top.metric} {top.a} vs {top.b}, "
            f"threshold {top.threshold:.3f})"
        )
    else:
        message = ""
    return AssertionResult(
        name=SPLIT_DRIFT,
        passed=not empty and not over,
        observed=None if top is None else round(top.ks, 4),
        expected=f"KS of {'/'.join(DRIFT_METRICS)} between splits <= max({rules.drift_max_ks:g}, "
        f"KS critical value at alpha {rules.drift_alpha:g})",
        message=message,
    )


# --- drift and statistics ---------------------------------------------------------------------


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two ECDFs."""
    left, right = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    if not len(left) or not len(right):
        return 0.0
    points = np.concatenate([left, right])
    gap = np.searchsorted(left, points, side="right") / len(left) - np.searchsorted(
        right, points, side="right"
    ) / len(right)
    return float(np.max(np.abs(gap)))


def ks_critical(n: int, m: int, alpha: float) -> float:
    """The KS statistic two samples of sizes n and m exceed with probability ``alpha`` when
    drawn from one distribution (the asymptotic formula)."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def drift_figures(
    samples: Sequence[Sample], assignments: Mapping[str, SplitName], rules: Thresholds
) -> list[DriftFigure]:
    """KS of brightness and contrast for each pair of splits, each against its threshold."""
    values: dict[SplitName, list[Measure]] = defaultdict(list)
    for sample in samples:
        split = assignments.get(sample.image.sha256)
        if split is not None and sample.measure is not None:
            values[split].append(sample.measure)
    figures = []
    for metric in DRIFT_METRICS:
        for index, a in enumerate(SPLITS):
            for b in SPLITS[index + 1 :]:
                n, m = len(values[a]), len(values[b])
                if not n or not m:
                    continue
                ks = ks_statistic(
                    [getattr(x, metric) for x in values[a]], [getattr(x, metric) for x in values[b]]
                )
                threshold = max(rules.drift_max_ks, ks_critical(n, m, rules.drift_alpha))
                figures.append(
                    DriftFigure(
                        metric=metric,
                        a=a,
                        b=b,
                        n_a=n,
                        n_b=m,
                        ks=round(ks, 6),
                        bound=rules.drift_max_ks,
                        threshold=round(threshold, 6),
                        passed=ks <= threshold,
                    )
                )
    return figures


def summarize(values: Sequence[float]) -> Summary:
    """Mean, spread and range of one statistic over one class."""
    if not values:
        return Summary(mean=0.0, std=0.0, min=0.0, median=0.0, max=0.0)
    array = np.asarray(values, dtype=np.float64)
    return Summary(
        mean=round(float(array.mean()), 4),
        std=round(float(array.std()), 4),
        min=round(float(array.min()), 4),
        median=round(float(np.median(array)), 4),
        max=round(float(array.max()), 4),
    )


def class_stats(samples: Sequence[Sample], labels: Sequence[str]) -> list[ClassStats]:
    """Per class: counts per defect type, and brightness, contrast and sharpness summaries."""
    stats = []
    for label in labels:
        mine = [s for s in samples if s.label.label.value == label and s.measure is not None]
        measures = [s.measure for s in mine if s.measure is not None]
        stats.append(
            ClassStats(
                label=label,
                count=len(mine),
                defect_types=dict(
                    sorted(Counter(s.label.defect_type or "-" for s in mine).items())
                ),
                brightness=summarize([m.brightness for m in measures]),
                contrast=summarize([m.contrast for m in measures]),
                sharpness=summarize([m.sharpness for m in measures]),
            )
        )
    return stats


def _most_common(counter: Counter[Any]) -> Any:
    """The most frequent value (ties: the largest), or None when there are none."""
    if not counter:
        return None
    return max(counter.items(), key=lambda kv: (kv[1], kv[0]))[0]


def _defect_allowed(label: ImageLabel, rules: Thresholds) -> bool:
    if label.defect_type is None:
        return True
    return label.label == Label.BAD and label.defect_type in rules.allowed_defect_types


def _listing(headline: str, names: Sequence[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:_LISTED])
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return f"{headline}: {shown}{more}"


__all__ = [
    "DRIFT_METRICS",
    "ENOUGH_FOR_MODEL",
    "IMAGES_DECODE",
    "LABELS_COMPLETE_AND_ALLOWED",
    "MIN_IMAGES_PER_CLASS",
    "NEAR_DUPLICATES",
    "NO_EXACT_DUPLICATES",
    "NO_EXACT_DUPLICATES_ACROSS_SPLITS",
    "SINGLE_SIZE_AND_MODE",
    "SPLIT_DRIFT",
    "check_enough_for_model",
    "check_exact_duplicates",
    "check_exact_duplicates_across_splits",
    "check_images_decode",
    "check_labels",
    "check_min_per_class",
    "check_near_duplicates",
    "check_size_and_mode",
    "check_split_drift",
    "class_ratio",
    "class_stats",
    "drift_figures",
    "exact_duplicate_groups",
    "ks_critical",
    "ks_statistic",
    "summarize",
]
