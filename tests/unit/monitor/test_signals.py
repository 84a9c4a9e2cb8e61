"""The monitor's signal math on numbers: bins and PSI, the noise floors, Fisher's bounds on the
defect count, the reference and the windows kept by counting, each signal's verdict, and the
hysteresis of an alarm."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats
from screwops_monitor.config import DEFAULT_DRIFT_BINS, Rules
from screwops_monitor.signals import (
    Observation,
    Reading,
    ReferenceWindow,
    Review,
    ReviewWindow,
    ScoreWindow,
    accuracy,
    bin_of,
    decide,
    defect_bounds,
    defect_rate,
    histogram,
    psi,
    psi_critical,
    score_drift,
)

from tests.unit.monitor.builders import line_scores

EDGES = DEFAULT_DRIFT_BINS
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def observation(i: int, probability: float, *, threshold: float = 0.5) -> Observation:
    return Observation(
        event_id=f"e{i}",
        probability=probability,
        defect=probability >= threshold,
        threshold=threshold,
        seen_at=T0 + timedelta(seconds=i),
    )


def window_of(probabilities: list[float], capacity: int | None = None) -> ScoreWindow:
    return ScoreWindow(
        capacity or len(probabilities),
        EDGES,
        [observation(i, p) for i, p in enumerate(probabilities)],
    )


def reference(probabilities: list[float], *, threshold: float = 0.5) -> ReferenceWindow:
    """A full reference of ``probabilities``, decided at ``threshold``."""
    return ReferenceWindow(
        len(probabilities),
        timedelta(0),
        EDGES,
        [observation(-1 - i, p, threshold=threshold) for i, p in enumerate(probabilities)],
    )


# --- bins and PSI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probability", "expected"),
    [(0.0, 0), (0.049, 0), (0.05, 1), (0.5, 3), (0.949, 4), (0.95, 5), (1.0, 5)],
)
def test_bins_are_closed_below_and_the_last_one_holds_one(
    probability: float, expected: int
) -> None:
    assert bin_of(probability, EDGES) == expected


def test_psi_is_zero_for_equal_shares_and_symmetric() -> None:
    counts = np.array([10, 5, 5, 5, 5, 10])
    assert psi(counts, counts * 3) == pytest.approx(0.0, abs=1e-3)
    other = np.array([2, 3, 10, 10, 3, 2])
    assert psi(counts, other) == pytest.approx(psi(other, counts))


def test_psi_matches_its_definition_and_an_empty_bin_stays_finite() -> None:
    expected = np.array([50, 0, 50])
    actual = np.array([25, 50, 25])
    e = (expected + 0.5) / (100 + 1.5)
    a = (actual + 0.5) / (100 + 1.5)
    assert psi(expected, actual) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    assert math.isfinite(psi(expected, actual))
    assert psi(expected, actual) > 1.0


def test_histogram_counts_each_probability_once() -> None:
    counts = histogram([0.0, 0.01, 0.3, 0.3, 0.99, 1.0], EDGES)
    assert counts.tolist() == [2, 0, 2, 0, 0, 2]


# Upper quantiles of the chi-square distribution, from the tables.
CHI2_5_0_999 = 20.515


def test_the_psi_noise_floor_is_the_chi_square_bound_and_shrinks_with_the_samples() -> None:
    small = psi_critical(6, 90, 200, 0.001)
    assert small == pytest.approx(CHI2_5_0_999 * (1 / 90 + 1 / 200), rel=1e-4)
    assert psi_critical(6, 1000, 1000, 0.001) < small


def test_the_defect_bounds_are_where_fishers_test_rejects() -> None:
    """A 1% reference (2 of 200): the fewest defects in 500 that alarm are where Fisher's exact
    test (one-sided, as SciPy computes it on the 2x2 table) first drops below alpha / 2."""
    alpha, shift = 0.001, 0.05
    high, low = defect_bounds(2, 200, 500, alpha, shift)
    assert high is not None
    assert low is None, "fewer than 1% of 500 cannot stand out of 2 in 200"

    def p_above(count: int) -> float:
        return float(stats.fisher_exact([[count, 500 - count], [2, 198]], "greater").pvalue)

    assert p_above(high) < alpha / 2 <= p_above(high - 1)
    assert high / 500 > 0.01 + shift


def test_the_defect_bounds_need_the_shift_and_the_significance_both() -> None:
    # Large samples: the operator's shift decides; small ones: the noise does.
    high, low = defect_bounds(3000, 10000, 5000, 0.001, 0.05)
    assert (high, low) == (int(0.35 * 5000) + 1, int(0.25 * 5000) - 1)
    assert defect_bounds(100, 200, 10, 0.001, 0.05) == (None, None), "no share of 10 stands out"
    assert defect_bounds(2, 200, 20, 0.001, 0.05)[0] == 5


def test_the_psi_floor_holds_sampling_noise_below_it() -> None:
    """Two samples of one distribution: the noise-aware threshold is rarely crossed (it is set
    at alpha 0.001), where the bare 0.25 would be crossed often with a 90-image baseline."""
    rng = np.random.default_rng(7)
    rules = Rules(window_size=200, min_observations=200)
    crossings, bare = 0, 0
    trials = 400
    for _ in range(trials):
        reading = score_drift(
            window_of(line_scores(rng, 200)), reference(line_scores(rng, 90)), rules
        )
        assert reading is not None
        crossings += reading.crossed
        bare += reading.value > rules.max_psi
    assert crossings <= 4
    assert bare > crossings


# --- windows -----------------------------------------------------------------------------------


def test_the_score_window_keeps_the_latest_and_its_counts_match_a_recount() -> None:
    rng = np.random.default_rng(1)
    probabilities = [float(p) for p in rng.random(500)]
    window = ScoreWindow(100, EDGES)
    for i, p in enumerate(probabilities):
        assert window.add(observation(i, p))
    latest = probabilities[-100:]
    assert len(window) == 100
    assert window.counts.tolist() == histogram(latest, EDGES).tolist()
    assert window.defects == sum(p >= 0.5 for p in latest)
    assert window.oldest == observation(400, probabilities[400])
    assert window.latest == observation(499, probabilities[499])


def test_the_score_window_takes_an_inspection_once() -> None:
    window = ScoreWindow(10, EDGES)
    assert window.add(observation(1, 0.9))
    assert not window.add(observation(1, 0.9))
    assert (len(window), window.defects, "e1" in window) == (1, 1, True)


def test_the_reference_takes_its_first_inspections_and_then_no_more() -> None:
    ref = ReferenceWindow(3, timedelta(0), EDGES)
    assert [ref.add(observation(i, p)) for i, p in enumerate([0.1, 0.9, 0.3])] == [True] * 3
    assert ref.full
    assert not ref.add(observation(3, 0.2))
    assert not ref.add(observation(0, 0.1)), "in already"
    assert (len(ref), "e3" in ref, ref.counts.tolist()) == (3, False, [0, 1, 1, 0, 1, 0])
    assert ref.latest == observation(2, 0.3)


def test_a_reference_with_a_minimum_span_fills_until_both_hold() -> None:
    ref = ReferenceWindow(3, timedelta(seconds=10), EDGES)
    for i in range(10):
        ref.add(observation(i, 0.1))  # seconds 0 to 9
    assert (len(ref), ref.full) == (10, False), "three are in, but they span nine seconds"
    assert ref.add(observation(10, 0.1))
    assert ref.full
    kept = ReferenceWindow(
        3, timedelta(seconds=10), EDGES, [observation(i, 0.1) for i in range(11)]
    )
    assert (len(kept), kept.full) == (11, True), "as kept: rebuilt whole"


def test_the_references_share_follows_the_gateways_threshold() -> None:
    ref = reference([0.1] * 50 + [0.6] * 25 + [0.9] * 25)
    assert ref.defect_rate(0.5) == pytest.approx(0.5)
    assert ref.defect_rate(0.7) == pytest.approx(0.25)
    assert ref.defects(0.6) == 50, "at the threshold is defective"


def test_a_second_review_replaces_the_first_and_counts_as_the_latest() -> None:
    window = ReviewWindow(3)
    for i, correct in enumerate([True, False, True]):
        window.add(Review(f"i{i}", correct, T0 + timedelta(seconds=i)))
    assert window.accuracy == pytest.approx(2 / 3)
    window.add(Review("i1", True, T0 + timedelta(seconds=10)))
    assert (len(window), window.correct) == (3, 3)
    window.add(Review("i3", False, T0 + timedelta(seconds=11)))
    assert window.get("i0") is None, "the oldest left"
    assert window.oldest == Review("i2", True, T0 + timedelta(seconds=2))
    assert window.accuracy == pytest.approx(2 / 3)


# --- readings ----------------------------------------------------------------------------------


def test_neither_score_signal_is_judged_before_the_reference_is_full() -> None:
    rules = Rules(window_size=100, min_observations=50)
    kept = [observation(-1 - i, p) for i, p in enumerate([0.1] * 50 + [0.9] * 50)]
    filling = ReferenceWindow(101, timedelta(0), EDGES, kept)
    window = window_of([0.5] * 50, capacity=100)
    assert score_drift(window, filling, rules) is None
    assert defect_rate(window, filling, rules) is None
    full = reference([0.1] * 50 + [0.9] * 50)
    assert score_drift(window_of([0.5] * 49, capacity=100), full, rules) is None
    reading = score_drift(window, full, rules)
    assert reading is not None
    assert reading.crossed


def test_a_shifted_stream_drifts_and_the_same_one_does_not() -> None:
    rng = np.random.default_rng(3)
    rules = Rules(window_size=300, min_observations=100)
    base = reference(line_scores(rng, 300))
    same = score_drift(window_of(line_scores(rng, 300)), base, rules)
    shifted = score_drift(window_of(line_scores(rng, 300, shift=1.5)), base, rules)
    assert same is not None
    assert shifted is not None
    assert not same.crossed
    assert same.recovered
    assert shifted.crossed
    assert shifted.threshold == pytest.approx(rules.max_psi), "large samples: the operator's bar"
    assert shifted.bounds == (("upper", shifted.threshold),)


def test_a_small_baseline_raises_the_drift_threshold_and_the_rearm_level_with_it() -> None:
    rules = Rules(window_size=100, min_observations=100)
    reading = score_drift(window_of([0.1] * 50 + [0.9] * 50), reference([0.1] * 20), rules)
    assert reading is not None
    floor = psi_critical(len(EDGES) - 1, 20, 100, rules.alpha)
    assert reading.threshold == pytest.approx(floor)
    assert reading.threshold > rules.max_psi


def test_defect_rate_alarms_either_way_around_the_references_share() -> None:
    # A shift no share of 200 lands on exactly, so floating point decides nothing here.
    rules = Rules(window_size=200, min_observations=100, max_defect_rate_shift=0.1475)
    base = reference([0.1] * 700 + [0.9] * 300)  # 30% defective at 0.5
    more = defect_rate(window_of([0.9] * 110 + [0.1] * 90), base, rules)
    fewer = defect_rate(window_of([0.9] * 10 + [0.1] * 190), base, rules)
    usual = defect_rate(window_of([0.9] * 62 + [0.1] * 138), base, rules)
    assert more is not None
    assert fewer is not None
    assert usual is not None
    high, low = defect_bounds(300, 1000, 200, rules.alpha, rules.max_defect_rate_shift)
    assert (high, low) == (90, 30), "past the shift either way: the operator's shift decides"
    assert dict(more.bounds) == {"upper": 0.445, "lower": 0.155}
    assert (more.value, more.crossed, more.threshold) == (0.55, True, 0.445)
    assert (fewer.value, fewer.crossed, fewer.threshold) == (0.05, True, 0.155)
    assert not usual.crossed
    assert usual.recovered


def test_a_short_reference_widens_the_defect_bounds_to_its_noise() -> None:
    """A 1% line, 2 defects in a 200-inspection reference: a window at 6.2% is past the 0.05
    shift but no alarm, since 2 in 200 could well be a 3% line; at 10% the line has changed."""
    rules = Rules(window_size=500, min_observations=100)
    base = reference([0.9] * 2 + [0.1] * 198)

    def at(defects: int) -> Reading:
        reading = defect_rate(window_of([0.9] * defects + [0.1] * (500 - defects)), base, rules)
        assert reading is not None
        return reading

    assert dict(at(50).bounds)["upper"] > 0.01 + rules.max_defect_rate_shift, "noise sets it"
    assert (at(5).crossed, at(31).crossed, at(50).crossed) == (False, False, True)


def test_the_window_is_judged_at_the_gateways_latest_threshold() -> None:
    base = reference([0.1] * 50 + [0.6] * 25 + [0.9] * 25)  # 25% at 0.7, 50% at 0.5
    rules = Rules(window_size=100, min_observations=100, max_defect_rate_shift=0.15)
    window = ScoreWindow(
        100, EDGES, [observation(i, 0.6 if i % 2 else 0.1, threshold=0.7) for i in range(100)]
    )
    reading = defect_rate(window, base, rules)
    assert reading is not None
    assert reading.value == 0.0, "nothing at or above 0.7"
    _, low = defect_bounds(25, 100, 100, rules.alpha, 0.15)
    assert low is not None
    assert dict(reading.bounds)["lower"] == (low + 1) / 100 < 0.25 - 0.15, "wider than asked"
    assert reading.crossed


def test_accuracy_has_a_floor_and_a_higher_rearm_level() -> None:
    rules = Rules(min_reviews=10, review_window_size=20, min_accuracy=0.9, accuracy_rearm=0.95)

    def reviewed(right: int, wrong: int) -> Reading | None:
        window = ReviewWindow(20)
        for i in range(right + wrong):
            window.add(Review(f"i{i}", i < right, T0 + timedelta(seconds=i)))
        return accuracy(window, rules)

    assert reviewed(5, 4) is None
    low, middle, high = reviewed(8, 2), reviewed(18, 2), reviewed(19, 1)
    assert low is not None
    assert middle is not None
    assert high is not None
    assert (low.value, low.crossed, low.recovered) == (0.8, True, False)
    assert (middle.value, middle.crossed, middle.recovered) == (0.9, False, False)
    assert (high.crossed, high.recovered) == (False, True)
    assert low.bounds == (("lower", 0.9),)


# --- hysteresis --------------------------------------------------------------------------------


def reading(*, crossed: bool, recovered: bool) -> Reading:
    return Reading("score_drift", 0.3, 0.25, 100, crossed, recovered, (("upper", 0.25),))


def test_an_armed_alarm_fires_when_crossed_and_only_then() -> None:
    assert decide(reading(crossed=True, recovered=False), fired_by=None, cause="a") == "fire"
    assert decide(reading(crossed=False, recovered=False), fired_by=None, cause="a") == "hold"
    assert decide(reading(crossed=False, recovered=True), fired_by=None, cause="a") == "hold"


def test_a_fired_alarm_holds_until_the_signal_recovers_past_the_rearm_level() -> None:
    still = reading(crossed=True, recovered=False)
    between = reading(crossed=False, recovered=False)
    back = reading(crossed=False, recovered=True)
    assert decide(still, fired_by="a", cause="b") == "hold"
    assert decide(between, fired_by="a", cause="b") == "hold"
    assert decide(back, fired_by="a", cause="b") == "rearm"


def test_the_event_that_fired_an_alarm_fires_it_again_when_redelivered() -> None:
    assert decide(reading(crossed=True, recovered=False), fired_by="a", cause="a") == "fire"


# --- rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrong",
    [
        {"drift_bins": (0.0, 0.5, 0.9)},
        {"drift_bins": (0.0, 0.5, 0.5, 1.0)},
        {"min_observations": 600},
        {"min_reviews": 300},
        {"psi_rearm": 0.3},
        {"defect_rate_rearm_shift": 0.2},
        {"accuracy_rearm": 0.85},
    ],
)
def test_rules_that_contradict_themselves_are_refused(wrong: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Rules.model_validate(wrong)
