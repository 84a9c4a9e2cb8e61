"""The monitor's signal math on numbers: bins and PSI, the noise floors, the windows kept by
counting, each signal's verdict, and the hysteresis of an alarm."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError
from screwops_monitor.config import DEFAULT_DRIFT_BINS, Rules
from screwops_monitor.signals import (
    Baseline,
    Observation,
    Reading,
    Reference,
    Review,
    ReviewWindow,
    ScoreWindow,
    accuracy,
    bin_of,
    chi2_quantile,
    decide,
    defect_rate,
    histogram,
    psi,
    psi_critical,
    rate_critical,
    score_drift,
)

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


def reference(probabilities: list[float]) -> Reference:
    return Reference(Baseline("eval-1", "run-1", "screws", 1, tuple(probabilities)), EDGES)


def scores(rng: np.random.Generator, n: int, *, shift: float = 0.0) -> list[float]:
    """A classifier's scores on a half-defective stream: confident, with some doubt; ``shift``
    moves every logit (what a change of light does to a model that never saw it)."""
    bad = rng.random(n) < 0.5
    p = np.where(bad, rng.beta(8, 1.5, n), rng.beta(1.5, 8, n))
    logits = np.log(p / (1 - p)) + shift
    return [float(x) for x in 1 / (1 + np.exp(-logits))]


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
CHI2_TABLE = {
    (1, 0.99): 6.635,
    (1, 0.999): 10.828,
    (2, 0.99): 9.210,
    (2, 0.999): 13.816,
    (5, 0.99): 15.086,
    (5, 0.999): 20.515,
    (9, 0.99): 21.666,
    (9, 0.999): 27.877,
}
Z_0_9995 = 3.2905  # the standard normal's 0.9995 quantile (two-sided alpha 0.001)


@pytest.mark.parametrize(("df", "p"), sorted(CHI2_TABLE))
def test_the_chi_square_quantile_is_close_to_the_tables(df: int, p: float) -> None:
    assert chi2_quantile(p, df) == pytest.approx(CHI2_TABLE[(df, p)], rel=0.035)


def test_noise_floors_shrink_with_the_samples() -> None:
    small = psi_critical(6, 90, 200, 0.001)
    assert small == pytest.approx(CHI2_TABLE[(5, 0.999)] * (1 / 90 + 1 / 200), rel=0.02)
    assert psi_critical(6, 1000, 1000, 0.001) < small
    assert rate_critical(0.3, 100, 400, 0.001) == pytest.approx(
        Z_0_9995 * math.sqrt(0.3 * 0.7 * (1 / 100 + 1 / 400)), rel=1e-4
    )
    assert rate_critical(0.0, 100, 400, 0.001) == 0.0


def test_the_psi_floor_holds_sampling_noise_below_it() -> None:
    """Two samples of one distribution: the noise-aware threshold is rarely crossed (it is set
    at alpha 0.001), where the bare 0.25 would be crossed often with a 90-image baseline."""
    rng = np.random.default_rng(7)
    rules = Rules(window_size=200, min_observations=200)
    crossings, bare = 0, 0
    trials = 400
    for _ in range(trials):
        reading = score_drift(window_of(scores(rng, 200)), reference(scores(rng, 90)), rules)
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


def test_drift_is_not_judged_before_the_window_has_enough() -> None:
    rules = Rules(window_size=100, min_observations=50)
    base = reference([0.1] * 50 + [0.9] * 50)
    assert score_drift(window_of([0.5] * 49, capacity=100), base, rules) is None
    assert score_drift(window_of([0.5] * 50, capacity=100), None, rules) is None
    reading = score_drift(window_of([0.5] * 50, capacity=100), base, rules)
    assert reading is not None
    assert reading.crossed


def test_a_shifted_stream_drifts_and_the_same_one_does_not() -> None:
    rng = np.random.default_rng(3)
    rules = Rules(window_size=300, min_observations=100)
    base = reference(scores(rng, 300))
    same = score_drift(window_of(scores(rng, 300)), base, rules)
    shifted = score_drift(window_of(scores(rng, 300, shift=1.5)), base, rules)
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


def test_defect_rate_alarms_either_way_around_the_baselines_share() -> None:
    rules = Rules(window_size=200, min_observations=100, max_defect_rate_shift=0.15)
    base = reference([0.1] * 700 + [0.9] * 300)  # calls 30% defective at 0.5
    more = defect_rate(window_of([0.9] * 110 + [0.1] * 90), base, rules)
    fewer = defect_rate(window_of([0.9] * 10 + [0.1] * 190), base, rules)
    usual = defect_rate(window_of([0.9] * 62 + [0.1] * 138), base, rules)
    assert more is not None
    assert fewer is not None
    assert usual is not None
    assert more.value == pytest.approx(0.55)
    assert more.crossed
    assert more.threshold == pytest.approx(0.45)
    assert fewer.value == pytest.approx(0.05)
    assert fewer.crossed
    assert fewer.threshold == pytest.approx(0.15)
    assert not usual.crossed
    assert usual.recovered
    assert dict(more.bounds) == {"upper": pytest.approx(0.45), "lower": pytest.approx(0.15)}


def test_the_baselines_share_follows_the_gateways_threshold() -> None:
    base = reference([0.1] * 50 + [0.6] * 25 + [0.9] * 25)
    assert base.defect_rate(0.5) == pytest.approx(0.5)
    assert base.defect_rate(0.7) == pytest.approx(0.25)
    assert base.defect_rate(0.6) == pytest.approx(0.5), "at the threshold is defective"
    rules = Rules(window_size=100, min_observations=100)
    window = ScoreWindow(
        100, EDGES, [observation(i, 0.6 if i % 2 else 0.1, threshold=0.7) for i in range(100)]
    )
    reading = defect_rate(window, base, rules)
    assert reading is not None
    assert reading.value == 0.0, "nothing at or above 0.7"
    # 100 against 100 is noisy: the margin is the noise floor's, wider than the 0.15 asked for.
    margin = rate_critical((0.25 * 100 + 0.0) / 200, 100, 100, rules.alpha)
    assert margin > rules.max_defect_rate_shift
    assert dict(reading.bounds)["lower"] == pytest.approx(0.25 - margin)
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
