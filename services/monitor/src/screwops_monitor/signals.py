"""The monitor's signals: pure functions over numbers, and the windows they are computed on.

Three signals watch the version in production:

* ``score_drift``: the population stability index (PSI) between the defect probabilities of the
  latest inspections and the production model's own probabilities on its evaluation test split
  (the baseline), over fixed probability bins;
* ``defect_rate``: the window's share of DEFECT verdicts against the share the baseline predicts
  at the threshold the gateway decided with;
* ``accuracy``: the share of reviewed inspections (a person's ground truth) the model got right.

Why PSI and not the Kolmogorov-Smirnov statistic: the baseline then is a histogram, fixed once
per deployment, and the window's histogram is kept by adding and removing one count per
inspection, so every inspection is judged in constant time; KS needs both samples sorted. PSI adds
up every bin's change, so mass leaving the confident ends for the uncertain middle (what a lamp
drifting or a new batch of parts does to a classifier first) counts wherever it happens, where KS
sees only the single largest gap between the two distribution functions. And operators know its
scale: below 0.1 nothing moved, above 0.25 the population changed.

PSI's weakness is sampling noise: two samples of one distribution have a PSI of about
``(bins - 1) * (1/n + 1/m)`` (it is Jeffreys' divergence, which tends to a chi-square with
``bins - 1`` degrees of freedom scaled by that factor), which for a 90-image test split is already
0.08. So a drift alarm needs a PSI above both the operator's threshold and the chi-square critical
value at ``alpha`` for these two sample sizes; the defect rate is treated alike with the normal
approximation of a difference of two proportions. The accuracy is compared with a requirement,
not with a sample, and has a plain floor.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

from screwops_monitor.config import Rules

__all__ = [
    "ACCURACY",
    "DEFECT_RATE",
    "SCORE_DRIFT",
    "SIGNALS",
    "Action",
    "Baseline",
    "Observation",
    "Reading",
    "Reference",
    "Review",
    "ReviewWindow",
    "ScoreWindow",
    "Signal",
    "accuracy",
    "chi2_quantile",
    "decide",
    "defect_rate",
    "histogram",
    "psi",
    "psi_critical",
    "rate_critical",
    "score_drift",
]

Signal = Literal["score_drift", "defect_rate", "accuracy"]
SCORE_DRIFT: Signal = "score_drift"
DEFECT_RATE: Signal = "defect_rate"
ACCURACY: Signal = "accuracy"
SIGNALS: tuple[Signal, ...] = (SCORE_DRIFT, DEFECT_RATE, ACCURACY)

Counts = npt.NDArray[np.int64]

# Added to every bin's count before PSI is taken, so an empty bin on one side gives a large but
# finite term (Jeffreys' prior: half an observation per bin).
SMOOTHING = 0.5


# --- the math ------------------------------------------------------------------------------


def bin_of(probability: float, edges: Sequence[float]) -> int:
    """The bin ``probability`` falls in: ``[edge_i, edge_i+1)``, the last bin closed at 1."""
    index = bisect.bisect_right(edges, probability) - 1
    return min(max(index, 0), len(edges) - 2)


def histogram(probabilities: Iterable[float], edges: Sequence[float]) -> Counts:
    """How many of ``probabilities`` fall in each bin of ``edges``."""
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for probability in probabilities:
        counts[bin_of(probability, edges)] += 1
    return counts


def psi(expected: Counts, actual: Counts, *, smoothing: float = SMOOTHING) -> float:
    """Population stability index of ``actual`` against ``expected`` (counts per bin).

    Symmetric in its arguments; 0 when the two histograms have the same shares.
    """
    if expected.shape != actual.shape:
        raise ValueError(f"histograms of {expected.shape} and {actual.shape} bins")
    bins = len(expected)
    e = (expected + smoothing) / (expected.sum() + bins * smoothing)
    a = (actual + smoothing) / (actual.sum() + bins * smoothing)
    return float(np.sum((a - e) * np.log(a / e)))


def chi2_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of a chi-square with ``df`` degrees of freedom.

    The Wilson-Hilferty approximation, which keeps the monitor free of SciPy: in the upper tail
    it is within about 1% of the exact value from 5 degrees of freedom on, 3% below that.
    """
    z = NormalDist().inv_cdf(p)
    spread = 2.0 / (9.0 * df)
    return df * (1.0 - spread + z * math.sqrt(spread)) ** 3


def psi_critical(bins: int, n_expected: int, n_actual: int, alpha: float) -> float:
    """The PSI that two samples of one distribution exceed with probability ``alpha``."""
    return chi2_quantile(1.0 - alpha, bins - 1) * (1.0 / n_expected + 1.0 / n_actual)


def rate_critical(rate: float, n_expected: int, n_actual: int, alpha: float) -> float:
    """The difference of two shares that samples of one share ``rate`` exceed (either way)
    with probability ``alpha``."""
    spread = rate * (1.0 - rate) * (1.0 / n_expected + 1.0 / n_actual)
    return NormalDist().inv_cdf(1.0 - alpha / 2) * math.sqrt(spread)


# --- the baseline --------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """The production model's scores on its evaluation test split, and where they came from."""

    evaluation_id: str
    run_id: str
    dataset_id: str
    dataset_version: int
    probabilities: tuple[float, ...]


class Reference:
    """A baseline prepared for the signals: its histogram and its scores sorted."""

    def __init__(self, baseline: Baseline, edges: Sequence[float]) -> None:
        self.baseline = baseline
        self.counts = histogram(baseline.probabilities, edges)
        self._sorted = sorted(baseline.probabilities)

    def __len__(self) -> int:
        return len(self._sorted)

    def defect_rate(self, threshold: float) -> float:
        """Share of the test split the model calls defective at ``threshold``."""
        return (len(self._sorted) - bisect.bisect_left(self._sorted, threshold)) / len(self)


# --- the windows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One inspection of the production version, as the signals need it."""

    event_id: str
    probability: float
    defect: bool
    threshold: float
    seen_at: datetime


class ScoreWindow:
    """The latest ``capacity`` inspections, with their histogram and DEFECT count kept as they
    come and go, so a signal costs the same whatever the window's size."""

    def __init__(
        self, capacity: int, edges: Sequence[float], observations: Iterable[Observation] = ()
    ) -> None:
        self.capacity = capacity
        self.edges = tuple(edges)
        self.counts: Counts = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self.defects = 0
        self._items: OrderedDict[str, Observation] = OrderedDict()
        for observation in observations:
            self.add(observation)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._items

    def add(self, observation: Observation) -> bool:
        """Take ``observation`` in (evicting the oldest beyond capacity); False if it was in."""
        if observation.event_id in self._items:
            return False
        self._items[observation.event_id] = observation
        self._count(observation, 1)
        while len(self._items) > self.capacity:
            _, evicted = self._items.popitem(last=False)
            self._count(evicted, -1)
        return True

    @property
    def oldest(self) -> Observation | None:
        return next(iter(self._items.values()), None)

    @property
    def latest(self) -> Observation | None:
        return next(reversed(self._items.values()), None)

    @property
    def defect_rate(self) -> float:
        return self.defects / len(self) if self._items else 0.0

    def _count(self, observation: Observation, step: int) -> None:
        self.counts[bin_of(observation.probability, self.edges)] += step
        self.defects += step if observation.defect else 0


@dataclass(frozen=True)
class Review:
    """A person's verdict on one inspection of the production version: was the model right."""

    inspection_id: str
    correct: bool
    seen_at: datetime


class ReviewWindow:
    """The latest ``capacity`` reviewed inspections; a second review of an inspection replaces
    its first (the reviewer corrected themselves) and counts as the latest."""

    def __init__(self, capacity: int, reviews: Iterable[Review] = ()) -> None:
        self.capacity = capacity
        self.correct = 0
        self._items: OrderedDict[str, Review] = OrderedDict()
        for review in reviews:
            self.add(review)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, inspection_id: str) -> Review | None:
        return self._items.get(inspection_id)

    def add(self, review: Review) -> None:
        earlier = self._items.pop(review.inspection_id, None)
        if earlier is not None:
            self.correct -= earlier.correct
        self._items[review.inspection_id] = review
        self.correct += review.correct
        while len(self._items) > self.capacity:
            _, evicted = self._items.popitem(last=False)
            self.correct -= evicted.correct

    @property
    def oldest(self) -> Review | None:
        return next(iter(self._items.values()), None)

    @property
    def accuracy(self) -> float:
        return self.correct / len(self) if self._items else 0.0


# --- readings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One signal's value now, the thresholds it is judged by, and the verdict.

    ``threshold`` is the alarm bound nearest the value (the one crossed, when ``crossed``);
    ``bounds`` are all its alarm bounds by side (``upper``, ``lower``), for the gauges.
    ``recovered``: the value is back past the re-arm level, so a fired alarm may re-arm.
    """

    signal: Signal
    value: float
    threshold: float
    observations: int
    crossed: bool
    recovered: bool
    bounds: tuple[tuple[str, float], ...]


def score_drift(window: ScoreWindow, reference: Reference | None, rules: Rules) -> Reading | None:
    """PSI of the window against the baseline; None until both have enough to compare."""
    if reference is None or len(reference) == 0 or len(window) < rules.min_observations:
        return None
    value = psi(reference.counts, window.counts)
    bins = len(window.counts)
    alarm = max(rules.max_psi, psi_critical(bins, len(reference), len(window), rules.alpha))
    rearm = rules.psi_rearm * alarm / rules.max_psi
    return Reading(
        signal=SCORE_DRIFT,
        value=value,
        threshold=alarm,
        observations=len(window),
        crossed=value > alarm,
        recovered=value < rearm,
        bounds=(("upper", alarm),),
    )


def defect_rate(window: ScoreWindow, reference: Reference | None, rules: Rules) -> Reading | None:
    """The window's share of DEFECT verdicts against the baseline's at the gateway's threshold.

    The threshold is the latest inspection's: the gateway's policy decides it, and the baseline
    holds every probability, so the expected share follows any change of it.
    """
    latest = window.latest
    if reference is None or len(reference) == 0 or latest is None:
        return None
    if len(window) < rules.min_observations:
        return None
    expected = reference.defect_rate(latest.threshold)
    rate = window.defect_rate
    n_ref, n_win = len(reference), len(window)
    pooled = (expected * n_ref + rate * n_win) / (n_ref + n_win)
    margin = max(rules.max_defect_rate_shift, rate_critical(pooled, n_ref, n_win, rules.alpha))
    rearm = rules.defect_rate_rearm_shift * margin / rules.max_defect_rate_shift
    upper, lower = min(expected + margin, 1.0), max(expected - margin, 0.0)
    return Reading(
        signal=DEFECT_RATE,
        value=rate,
        threshold=upper if rate >= expected else lower,
        observations=n_win,
        crossed=rate > upper or rate < lower,
        recovered=abs(rate - expected) < rearm,
        bounds=(("upper", upper), ("lower", lower)),
    )


def accuracy(reviews: ReviewWindow, rules: Rules) -> Reading | None:
    """Share of the reviewed inspections the model got right; None until enough are reviewed."""
    if len(reviews) < rules.min_reviews:
        return None
    value = reviews.accuracy
    return Reading(
        signal=ACCURACY,
        value=value,
        threshold=rules.min_accuracy,
        observations=len(reviews),
        crossed=value < rules.min_accuracy,
        recovered=value >= rules.accuracy_rearm,
        bounds=(("lower", rules.min_accuracy),),
    )


# --- hysteresis ----------------------------------------------------------------------------

Action = Literal["fire", "rearm", "hold"]


def decide(reading: Reading, *, fired_by: str | None, cause: str) -> Action:
    """What an alarm does with a reading.

    ``fired_by`` is the event that fired the alarm (None: armed). An armed alarm fires when its
    signal crosses the threshold; a fired one holds until the signal recovers past the re-arm
    level, then re-arms. The same event arriving again (a redelivery, or a retry after the
    announcement failed) fires again, so an alarm whose announcement was lost is announced, with
    the same event id, rather than swallowed.
    """
    if fired_by is None or fired_by == cause:
        return "fire" if reading.crossed else "hold"
    return "rearm" if reading.recovered else "hold"
