"""The monitor's signals: pure functions over numbers, and the windows they are computed on.

Three signals watch the version in production:

* ``score_drift``: the population stability index (PSI) between the defect probabilities of the
  latest inspections and those of the version's reference window, over fixed probability bins;
* ``defect_rate``: the window's share of DEFECT verdicts against the reference's share at the
  threshold the gateway decided with;
* ``accuracy``: the share of reviewed inspections (a person's ground truth) the model got right.

The reference is the version's own first inspections on the line (:class:`ReferenceWindow`), not
its evaluation's test split: a test split is balanced for training and judging (a quarter to a
half defective), a line may run at 1%, and a monitor comparing the two would alarm on the line
being itself. Until the reference is full neither score signal is judged.

Why PSI and not the Kolmogorov-Smirnov statistic: the reference is a histogram, fixed once full,
and the window's histogram is kept by adding and removing one count per inspection, so every
inspection is judged in constant time; KS needs both samples sorted. PSI adds up every bin's
change, so mass leaving the confident ends for the uncertain middle (what a lamp drifting or a
new batch of parts does to a classifier first) counts wherever it happens, where KS sees only the
single largest gap between the two distribution functions. And operators know its scale: below
0.1 nothing moved, above 0.25 the population changed.

Both score signals are tested against sampling noise as well as the operator's bar. Two samples of
one distribution have a PSI of about ``(bins - 1) * (1/n + 1/m)`` (it is Jeffreys' divergence,
which tends to a chi-square with ``bins - 1`` degrees of freedom scaled by that factor), so a
drift alarm needs a PSI above both ``max_psi`` and that chi-square's critical value at ``alpha``.
The defect counts are few on a good line (two in a 200-inspection reference at 1%), too few for a
normal approximation and too uncertain to take the reference's share as known, so the defect rate
is judged with Fisher's exact test of the window's counts against the reference's. The accuracy is
compared with a requirement, not with a sample, and has a plain floor.
"""

from __future__ import annotations

import bisect
import functools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

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
    "ReferenceWindow",
    "Review",
    "ReviewWindow",
    "ScoreWindow",
    "Signal",
    "accuracy",
    "decide",
    "defect_bounds",
    "defect_rate",
    "histogram",
    "psi",
    "psi_critical",
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


def psi_critical(bins: int, n_expected: int, n_actual: int, alpha: float) -> float:
    """The PSI that two samples of one distribution exceed with probability ``alpha``."""
    return float(stats.chi2.isf(alpha, bins - 1)) * (1.0 / n_expected + 1.0 / n_actual)


@functools.lru_cache(maxsize=4096)
def defect_bounds(
    reference_defects: int, reference_size: int, window_size: int, alpha: float, min_shift: float
) -> tuple[int | None, int | None]:
    """The window's DEFECT counts that alarm against a reference with ``reference_defects`` of
    ``reference_size``: the fewest that alarm high and the most that alarm low (None: no count
    can, the samples are too small).

    A count alarms when its share is more than ``min_shift`` from the reference's and Fisher's
    exact test puts it in a tail of ``alpha / 2``. That test takes the defects of both samples
    together as given, so the window's count is hypergeometric; SciPy's hypergeometric
    distribution gives both tails for every possible count at once. The bounds depend on the sizes
    and the reference's count only, hence the cache: a full window asks the same question at
    every inspection.
    """
    counts = np.arange(window_size + 1)
    shift = counts / window_size - reference_defects / reference_size
    together = counts + reference_defects
    population = reference_size + window_size
    above = stats.hypergeom.sf(counts - 1, population, together, window_size)
    below = stats.hypergeom.cdf(counts, population, together, window_size)
    high = np.flatnonzero((shift > min_shift) & (above < alpha / 2))
    low = np.flatnonzero((shift < -min_shift) & (below < alpha / 2))
    return (int(high[0]) if high.size else None, int(low[-1]) if low.size else None)


# --- the baseline --------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """The production model's scores on its evaluation test split, and where they came from.

    Not what the score signals are judged against (that is the reference window): it names the
    dataset a retraining is asked on, and set beside the reference it shows how unlike its test
    data the line was from the start, a shift no later alarm can see.
    """

    evaluation_id: str
    run_id: str
    dataset_id: str
    dataset_version: int
    probabilities: tuple[float, ...]


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


class ReferenceWindow:
    """A production version's first inspections on the line: its score distribution and defect
    rate as the version found them, what the score signals are later judged against.

    It takes inspections until it holds ``size`` of them spanning at least ``min_span`` (from the
    first one's time to the latest's), then is full and takes no more. Observations given to the
    constructor are taken whatever their number: they are the reference as it was kept.
    """

    def __init__(
        self,
        size: int,
        min_span: timedelta,
        edges: Sequence[float],
        observations: Iterable[Observation] = (),
    ) -> None:
        self.size = size
        self.min_span = min_span
        self.edges = tuple(edges)
        self.counts: Counts = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self._items: dict[str, Observation] = {}
        self._sorted: list[float] = []
        self._first: datetime | None = None
        self.latest: Observation | None = None
        """The reference's latest inspection (by the time it was seen)."""
        for observation in observations:
            self._take(observation)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._items

    @property
    def full(self) -> bool:
        if len(self._items) < self.size or self._first is None or self.latest is None:
            return False
        return self.latest.seen_at - self._first >= self.min_span

    def add(self, observation: Observation) -> bool:
        """Take ``observation`` in unless full or already in; True if taken."""
        if self.full or observation.event_id in self._items:
            return False
        self._take(observation)
        return True

    def defects(self, threshold: float) -> int:
        """How many of the reference's inspections score at or above ``threshold``: its DEFECT
        count had the gateway decided them all at that threshold."""
        return len(self._sorted) - bisect.bisect_left(self._sorted, threshold)

    def defect_rate(self, threshold: float) -> float:
        return self.defects(threshold) / len(self) if self._items else 0.0

    def _take(self, observation: Observation) -> None:
        self._items[observation.event_id] = observation
        self.counts[bin_of(observation.probability, self.edges)] += 1
        bisect.insort(self._sorted, observation.probability)
        seen = observation.seen_at
        self._first = seen if self._first is None else min(self._first, seen)
        if self.latest is None or seen >= self.latest.seen_at:
            self.latest = observation


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


def score_drift(window: ScoreWindow, reference: ReferenceWindow, rules: Rules) -> Reading | None:
    """PSI of the window against the reference; None until the reference is full and the window
    has enough to compare."""
    if not reference.full or len(window) < rules.min_observations:
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


def defect_rate(window: ScoreWindow, reference: ReferenceWindow, rules: Rules) -> Reading | None:
    """The window's share of DEFECT verdicts against the reference's at the gateway's threshold;
    None until the reference is full and the window has enough to compare.

    The threshold is the latest inspection's: the gateway's policy decides it, and the reference
    keeps every probability, so its share follows any change of it. The bounds are the shares
    just short of the counts :func:`defect_bounds` finds alarming (0 or 1 where no count is), and
    the re-arm band is the same fraction of each side's margin as ``defect_rate_rearm_shift`` is
    of ``max_defect_rate_shift``.
    """
    latest = window.latest
    if not reference.full or latest is None or len(window) < rules.min_observations:
        return None
    n = len(window)
    expected = reference.defect_rate(latest.threshold)
    high, low = defect_bounds(
        reference.defects(latest.threshold),
        len(reference),
        n,
        rules.alpha,
        rules.max_defect_rate_shift,
    )
    upper = 1.0 if high is None else (high - 1) / n
    lower = 0.0 if low is None else (low + 1) / n
    rate = window.defect_rate
    band = rules.defect_rate_rearm_shift / rules.max_defect_rate_shift
    near = expected - band * (expected - lower) < rate < expected + band * (upper - expected)
    return Reading(
        signal=DEFECT_RATE,
        value=rate,
        threshold=upper if rate >= expected else lower,
        observations=n,
        crossed=rate > upper or rate < lower,
        recovered=near,
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
