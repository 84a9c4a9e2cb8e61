"""The monitor's core on fakes: the reference from the version's first inspections (not from the
evaluation's test split), alarms that fire once and re-arm only after recovering, the cooldown on
training requests, a new version starting afresh, a restart carrying on from the store,
redeliveries, the gauges, and the handlers on FastStream's in-memory broker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from faststream.kafka import TestKafkaBroker
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from screwops_bus import Bus
from screwops_contracts import (
    Event,
    InspectionCompleted,
    InspectionCompletedPayload,
    InspectionReviewed,
    ModelDegraded,
    Topic,
    TrainingRequested,
)
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import evaluation_id_of, evaluation_report_key
from screwops_monitor import handlers
from screwops_monitor.config import Rules
from screwops_monitor.service import MonitorService
from screwops_monitor.signals import defect_bounds

from tests.fakes import FakeObjects, RecordingBus, memory_bus
from tests.support import model_deployed, model_rolled_back
from tests.unit.monitor import builders
from tests.unit.monitor.builders import evaluator_report, line_scores
from tests.unit.monitor.fakes import FakeStore

MODEL = "screw-classifier"
DATASET = "screws"
T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
RULES = Rules(
    reference_size=100,
    window_size=50,
    min_observations=20,
    review_window_size=20,
    min_reviews=10,
    cooldown_s=3600,
)
# A confident model on a half-defective line (and test split): the reference, 100 inspections.
CONFIDENT = [0.02, 0.1, 0.9, 0.98] * 25
# What the same model says once the light has changed: unsure about everything.
UNSURE = [0.35, 0.45, 0.55, 0.65]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=10)
        return self.now


def report_json(run_id: str, probabilities: Iterable[float], *, dataset_id: str = DATASET) -> bytes:
    """An evaluation report as far as the monitor reads it, with a field it does not know."""
    return json.dumps(
        {
            "evaluation_id": evaluation_id_of(MODEL, run_id),
            "model_name": MODEL,
            "run_id": run_id,
            "dataset_id": dataset_id,
            "dataset_version": 3,
            "passed": True,
            "images": [
                {"sha256": f"{i:064x}", "probability": p} for i, p in enumerate(probabilities)
            ],
        }
    ).encode()


def inspection(version: int, probability: float, *, model: str = MODEL) -> InspectionCompleted:
    return InspectionCompleted.origin(
        InspectionCompletedPayload(
            request_id="req",
            line_id="line-1",
            camera_id="cam-1",
            verdict="DEFECT" if probability >= 0.5 else "GOOD",
            defect_probability=probability,
            threshold=0.5,
            model_name=model,
            model_version=version,
            trace_id="0" * 32,
            latency_ms=5.0,
        ),
        producer="gateway",
    )


def review(version: int, inspection_id: str, *, correct: bool) -> InspectionReviewed:
    return builders.review(MODEL, version, inspection_id, correct=correct, reviewed_at=T0)


@dataclass
class Harness:
    store: FakeStore = field(default_factory=FakeStore)
    objects: FakeObjects = field(default_factory=FakeObjects)
    published: RecordingBus = field(default_factory=lambda: RecordingBus("monitor"))
    clock: Clock = field(default_factory=Clock)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    rules: Rules = RULES

    def __post_init__(self) -> None:
        self.service = self.start()

    def start(self) -> MonitorService:
        """A monitor process on this store: a second call is the monitor after a restart (with
        its own metrics, as a new process has)."""
        self.reader = InMemoryMetricReader()
        return MonitorService(
            self.store,
            self.objects,
            self.published.publish,
            rules=self.rules,
            clock=self.clock,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
        )

    def put_report(self, run_id: str, probabilities: Iterable[float]) -> None:
        key = evaluation_report_key(evaluation_id_of(MODEL, run_id))
        self.objects.objects[(Bucket.MODELS, key)] = report_json(run_id, probabilities)

    async def deploy(
        self,
        version: int,
        *,
        report: Iterable[float] | None = CONFIDENT,
        reference: Iterable[float] = CONFIDENT,
    ) -> None:
        """Deploy ``version`` with an evaluation report of test-split scores ``report`` (None: no
        report), then stream the line's first inspections, ``reference``."""
        run_id = f"run-{version}"
        if report is not None:
            self.put_report(run_id, report)
        await self.service.on_model_deployed(
            model_deployed(MODEL, version, run_id=run_id, at=self.clock())
        )
        await self.stream(version, reference)

    async def stream(
        self, version: int, probabilities: Iterable[float], *, repeat: int = 1
    ) -> list[InspectionCompleted]:
        sent = []
        for _ in range(repeat):
            for p in probabilities:
                event = inspection(version, p)
                await self.service.on_inspection_completed(event)
                sent.append(event)
        return sent

    def degraded(self) -> list[ModelDegraded]:
        return self.published.of(ModelDegraded)

    def requested(self) -> list[TrainingRequested]:
        return self.published.of(TrainingRequested)

    def points(self, name: str) -> dict[frozenset[tuple[str, Any]], float]:
        found: dict[frozenset[tuple[str, Any]], float] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            value = getattr(point, "value", None)
                            if value is not None:
                                found[frozenset((point.attributes or {}).items())] = float(value)
        return found


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


@pytest.fixture
def harness() -> Harness:
    return Harness()


# --- firing once -------------------------------------------------------------------------------


async def test_a_stream_like_the_reference_fires_nothing(harness: Harness) -> None:
    await harness.deploy(1)
    await harness.stream(1, CONFIDENT, repeat=3)
    assert harness.published == []
    assert harness.service.handled[Topic.INSPECTION_COMPLETED] == 400


async def test_a_drifting_stream_fires_each_signal_once_and_asks_for_training_once(
    harness: Harness,
) -> None:
    await harness.deploy(1)
    await harness.stream(1, CONFIDENT[:12])
    sent = await harness.stream(1, UNSURE, repeat=50)

    degraded = harness.degraded()
    assert {e.payload.signal for e in degraded} == {"score_drift"}
    [drift] = degraded
    assert drift.payload.model_dump() == {
        "model_name": MODEL,
        "model_version": 1,
        "signal": "score_drift",
        "value": pytest.approx(drift.payload.value),
        "threshold": pytest.approx(drift.payload.threshold),
        "window": 20,
    }
    assert drift.payload.value > drift.payload.threshold >= RULES.max_psi
    cause = next(e for e in sent if e.event_id == drift.causation_id)
    assert sent.index(cause) == 20 - 12 - 1, "the inspection that filled the window to 20"
    assert (drift.producer, drift.correlation_id) == ("monitor", cause.correlation_id)

    [request] = harness.requested()
    assert request.causation_id == cause.event_id
    payload = request.payload
    assert (payload.model_name, payload.dataset_id, payload.dataset_version) == (
        MODEL,
        DATASET,
        None,
    )
    assert (payload.requested_by, payload.degraded_version) == ("monitor", 1)
    assert payload.reason.startswith(f"{MODEL} version 1: score_drift ")


async def test_the_defect_rate_alarms_when_the_share_of_defects_moves() -> None:
    # Samples large enough for a 0.2 move to stand out of the noise, with scores in the same
    # bins as the reference's: the defect rate moves, the score distribution barely.
    rules = RULES.model_copy(
        update={"reference_size": 300, "window_size": 300, "min_observations": 300}
    )
    harness = Harness(rules=rules)
    await harness.deploy(1, reference=CONFIDENT * 3)
    await harness.stream(1, [0.02, 0.1, 0.02, 0.9, 0.98, 0.9, 0.98, 0.9, 0.98, 0.9], repeat=30)
    [rate] = harness.degraded()
    assert rate.payload.signal == "defect_rate"
    assert rate.payload.value == pytest.approx(0.7)
    high, _ = defect_bounds(150, 300, 300, rules.alpha, rules.max_defect_rate_shift)
    assert high is not None
    assert rate.payload.threshold == (high - 1) / 300
    assert len(harness.requested()) == 1


async def test_an_alarm_rearms_only_after_recovering_and_the_cooldown_holds_the_next_request(
    harness: Harness,
) -> None:
    await harness.deploy(1)
    await harness.stream(1, UNSURE, repeat=10)
    assert len(harness.degraded()) == 1
    assert len(harness.requested()) == 1

    # Back past the threshold but not below the re-arm level: still fired, nothing new.
    await harness.stream(1, CONFIDENT[:30])
    await harness.stream(1, UNSURE, repeat=10)
    assert len(harness.degraded()) == 1
    assert harness.store.alarms[(MODEL, 1, "score_drift")][0] is False

    # Fully recovered: re-armed; drifting again fires again, but the cooldown holds training.
    await harness.stream(1, CONFIDENT, repeat=1)
    assert harness.store.alarms[(MODEL, 1, "score_drift")][0] is True
    await harness.stream(1, UNSURE, repeat=10)
    assert len(harness.degraded()) == 2
    assert len(harness.requested()) == 1
    assert harness.points("screwops_monitor_training_requests") == {
        labels(model=MODEL, outcome="requested"): 1,
        labels(model=MODEL, outcome="cooldown"): 1,
    }

    # Once the cooldown has passed, the next firing asks again.
    harness.clock.now += timedelta(seconds=RULES.cooldown_s)
    await harness.stream(1, CONFIDENT, repeat=1)
    await harness.stream(1, UNSURE, repeat=10)
    assert len(harness.degraded()) == 3
    assert len(harness.requested()) == 2


async def test_signals_firing_together_make_one_training_request(harness: Harness) -> None:
    await harness.deploy(1)
    await harness.stream(1, [0.6, 0.7], repeat=20)  # unsure and all defective
    degraded = harness.degraded()
    assert sorted(e.payload.signal for e in degraded) == ["defect_rate", "score_drift"]
    assert len({e.event_id for e in degraded}) == 2, "one cause, two events: distinct ids"
    [request] = harness.requested()
    assert "score_drift" in request.payload.reason
    assert "defect_rate" in request.payload.reason


# --- the reference: the line itself ----------------------------------------------------------

# The operator's defaults for the windows (a 200-inspection reference, 500-inspection window).
LINE_RULES = Rules(review_window_size=20, min_reviews=10, cooldown_s=3600)


async def a_1_percent_line(harness: Harness, rng: np.random.Generator) -> None:
    """Version 1 of a model whose test split was 30% defective, deployed on a line that makes
    1% defective screws; its reference is full."""
    await harness.deploy(
        1,
        report=line_scores(rng, 300, defects=0.3),
        reference=line_scores(rng, LINE_RULES.reference_size, defects=0.01),
    )


async def test_a_line_at_1_percent_is_no_alarm_though_its_test_split_had_30_percent() -> None:
    harness = Harness(rules=LINE_RULES)
    rng = np.random.default_rng(11)
    await a_1_percent_line(harness, rng)
    await harness.stream(1, line_scores(rng, 3 * LINE_RULES.window_size, defects=0.01))

    assert harness.published == []
    version = {"model": MODEL, "version": "1"}
    values = harness.points("screwops_monitor_signal")
    assert set(values) == {
        labels(**version, signal="score_drift"),
        labels(**version, signal="defect_rate"),
    }, "both judged, on a full window"
    assert values[labels(**version, signal="defect_rate")] < 0.03
    figures = harness.points("screwops_monitor_reference")
    assert figures[labels(**version, figure="defect_rate")] < 0.03
    assert figures[labels(**version, figure="evaluation_defect_rate")] > 0.2
    assert figures[labels(**version, figure="evaluation_psi")] > LINE_RULES.max_psi, (
        "the sanity check shows how unlike its test split the line is"
    )


async def test_a_shift_after_the_reference_raises_the_alarms_once() -> None:
    harness = Harness(rules=LINE_RULES)
    rng = np.random.default_rng(12)
    await a_1_percent_line(harness, rng)
    await harness.stream(1, line_scores(rng, LINE_RULES.window_size, defects=0.01))
    assert harness.published == []

    # A new batch of parts, 10% defective, under a lamp that leaves every score less sure.
    await harness.stream(1, line_scores(rng, LINE_RULES.window_size, defects=0.1, shift=1.0))
    assert sorted(e.payload.signal for e in harness.degraded()) == ["defect_rate", "score_drift"]
    [request] = harness.requested()
    assert request.payload.dataset_id == DATASET, "the dataset the evaluation report names"


async def test_nothing_is_judged_on_the_scores_before_the_reference_is_full() -> None:
    harness = Harness(rules=LINE_RULES)
    await harness.deploy(1, reference=[])
    await harness.stream(1, UNSURE, repeat=LINE_RULES.reference_size // 4 - 1)
    assert harness.published == []
    assert harness.points("screwops_monitor_signal") == {}
    assert harness.store.observations == {}, "all of them are the reference"
    for i in range(10):  # the accuracy needs no reference
        await harness.service.on_inspection_reviewed(review(1, f"i{i}", correct=i < 5))
    assert [e.payload.signal for e in harness.degraded()] == ["accuracy"]


async def test_the_reference_survives_restarts_filling_and_full() -> None:
    harness = Harness(rules=LINE_RULES)
    rng = np.random.default_rng(13)
    await harness.deploy(1, report=line_scores(rng, 300, defects=0.3), reference=[])
    first = line_scores(rng, LINE_RULES.reference_size, defects=0.01)
    await harness.stream(1, first[:150])

    harness.service = harness.start()  # killed while the reference fills
    await harness.stream(1, first[150:])
    kept = await harness.store.reference(MODEL, 1)
    assert [o.probability for o in kept] == first, "the first 200, across the restart"
    assert harness.store.observations == {}
    await harness.stream(1, line_scores(rng, 1, defects=0.01))
    assert len(harness.store.observations) == 1, "full: the next one is the window's"

    harness.service = harness.start()  # killed with the reference full
    await harness.stream(1, line_scores(rng, LINE_RULES.window_size, defects=0.01))
    assert harness.published == [], "judged against the rebuilt reference: the line as it was"
    windows = harness.points("screwops_monitor_window")
    assert windows[labels(model=MODEL, version="1", window="reference")] == 200
    await harness.stream(1, line_scores(rng, LINE_RULES.window_size, defects=0.1, shift=1.0))
    assert {e.payload.signal for e in harness.degraded()} == {"defect_rate", "score_drift"}


# --- versions ----------------------------------------------------------------------------------


async def test_a_new_version_starts_afresh_and_the_cooldown_outlives_it(harness: Harness) -> None:
    await harness.deploy(1)
    await harness.stream(1, UNSURE, repeat=10)
    assert len(harness.requested()) == 1

    await harness.deploy(2)
    assert harness.store.observations == {}, "the old version's window is forgotten"
    assert {v for _, v, _ in harness.store.reference_kept.values()} == {2}, "its reference too"
    await harness.stream(1, UNSURE, repeat=10)  # a pinned request to version 1: not production
    assert len(harness.degraded()) == 1
    await harness.stream(2, CONFIDENT[:19])
    assert (
        harness.points("screwops_monitor_window")[
            labels(model=MODEL, version="2", window="inspections")
        ]
        == 19
    )

    await harness.stream(2, UNSURE, repeat=10)
    assert [e.payload.model_version for e in harness.degraded()] == [1, 2], "armed again"
    assert len(harness.requested()) == 1, "still cooling down"
    assert (
        harness.points("screwops_monitor_observations")[
            labels(kind="inspections", outcome="not_production")
        ]
        == 40
    )


async def test_a_rollback_collects_a_new_reference(harness: Harness) -> None:
    unsure = [0.3, 0.4, 0.6, 0.7] * 25
    await harness.deploy(1)
    await harness.deploy(2)
    harness.clock.now += timedelta(seconds=1)
    await harness.service.on_model_rolled_back(model_rolled_back(MODEL, 2, 1, at=harness.clock()))
    production = await harness.store.get_production(MODEL)
    assert production is not None
    assert production.version == 1
    assert harness.store.reference_kept == {}, "the line may have changed since version 1 left"

    await harness.stream(1, unsure)  # version 1's new reference: unsure on today's line
    await harness.stream(1, [0.35, 0.45, 0.55, 0.65], repeat=10)
    assert harness.published == [], "judged against today's reference, not its first one"
    assert len(await harness.store.reference(MODEL, 1)) == 100


async def test_a_move_older_than_the_recorded_one_is_ignored(harness: Harness) -> None:
    await harness.deploy(2)
    harness.put_report("run-1", CONFIDENT)
    await harness.service.on_model_deployed(model_deployed(MODEL, 1, run_id="run-1", at=T0))
    production = await harness.store.get_production(MODEL)
    assert production is not None
    assert production.version == 2


async def test_a_redelivered_move_keeps_the_window(harness: Harness) -> None:
    event = model_deployed(MODEL, 1, run_id="run-1", at=harness.clock())
    harness.put_report("run-1", CONFIDENT)
    await harness.service.on_model_deployed(event)
    await harness.stream(1, CONFIDENT[:15])
    await harness.service.on_model_deployed(event)
    assert len(await harness.store.reference(MODEL, 1)) == 15


async def test_nothing_is_watched_before_a_deployment(harness: Harness) -> None:
    await harness.stream(1, UNSURE, repeat=10)
    assert harness.published == []
    assert harness.store.observations == {}
    assert harness.store.reference_kept == {}


async def test_a_version_without_a_report_is_judged_but_cannot_ask_for_training(
    harness: Harness,
) -> None:
    await harness.deploy(1, report=None)
    await harness.stream(1, UNSURE, repeat=10)
    [degraded] = harness.degraded()
    assert (degraded.payload.signal, degraded.payload.window) == ("score_drift", 20)
    assert harness.requested() == [], "no report: the dataset to retrain on is unknown"
    assert harness.points("screwops_monitor_training_requests") == {
        labels(model=MODEL, outcome="no_dataset"): 1
    }
    assert harness.points("screwops_monitor_reference") == {
        labels(model=MODEL, version="1", figure="defect_rate"): 0.5
    }, "nothing to set the reference beside"


async def test_the_baseline_reads_the_report_the_evaluator_writes(harness: Harness) -> None:
    run_id = "run-7"
    evaluation_id = evaluation_id_of(MODEL, run_id)
    key = evaluation_report_key(evaluation_id)
    harness.objects.objects[(Bucket.MODELS, key)] = evaluator_report(
        MODEL, run_id, CONFIDENT, dataset_id="line-7-screws", dataset_version=4
    )
    await harness.service.on_model_deployed(model_deployed(MODEL, 7, run_id=run_id))

    served = await harness.store.get_version(MODEL, 7)
    assert served is not None
    assert served.baseline is not None
    assert served.baseline.probabilities == tuple(CONFIDENT)
    assert (served.baseline.dataset_id, served.baseline.dataset_version) == ("line-7-screws", 4)
    assert served.baseline.evaluation_id == evaluation_id


# --- reviews -----------------------------------------------------------------------------------


async def test_a_corrected_review_replaces_the_first_and_the_accuracy_rearms(
    harness: Harness,
) -> None:
    await harness.deploy(1)
    for i in range(10):
        await harness.service.on_inspection_reviewed(review(1, f"i{i}", correct=i < 8))
    [degraded] = harness.degraded()
    assert (degraded.payload.signal, degraded.payload.value) == ("accuracy", 0.8)
    assert len(harness.requested()) == 1

    for i in (8, 9):  # the reviewer corrects themselves: the model was right
        await harness.service.on_inspection_reviewed(review(1, f"i{i}", correct=True))
    assert harness.store.alarms[(MODEL, 1, "accuracy")][0] is True
    assert (
        harness.points("screwops_monitor_signal")[
            labels(model=MODEL, version="1", signal="accuracy")
        ]
        == 1.0
    )
    assert len(harness.degraded()) == 1


# --- restarts and redeliveries -----------------------------------------------------------------


async def test_a_restarted_monitor_rebuilds_its_window_and_keeps_its_alarms(
    harness: Harness,
) -> None:
    await harness.deploy(1)
    await harness.stream(1, UNSURE, repeat=6)  # 24 inspections: fired at the 20th
    assert len(harness.degraded()) == 1

    harness.service = harness.start()  # killed and started again, on the same database
    await harness.stream(1, UNSURE, repeat=3)
    assert len(harness.degraded()) == 1, "the alarm is still fired"
    assert len(harness.requested()) == 1
    windows = harness.points("screwops_monitor_window")
    assert windows[labels(model=MODEL, version="1", window="inspections")] == 36
    assert windows[labels(model=MODEL, version="1", window="reference")] == 100


async def test_a_restarted_monitor_carries_on_filling_its_window(harness: Harness) -> None:
    await harness.deploy(1)
    await harness.stream(1, UNSURE, repeat=4)  # 16: not judged yet
    harness.service = harness.start()
    await harness.stream(1, UNSURE, repeat=1)  # 20 with the ones before the restart
    assert [e.payload.window for e in harness.degraded()] == [20]


async def test_a_cause_whose_announcement_failed_announces_again_with_the_same_ids(
    harness: Harness,
) -> None:
    await harness.deploy(1)
    await harness.stream(1, [0.45, 0.55], repeat=9)
    await harness.stream(1, [0.45])
    tipping = inspection(1, 0.55)  # the 20th: the window is judged, and has drifted
    harness.published.failures.append(ConnectionError("Kafka did not acknowledge"))
    with pytest.raises(ConnectionError):
        await harness.service.on_inspection_completed(tipping)
    assert harness.published == []

    await harness.service.on_inspection_completed(tipping)  # the bus retries
    first = [(type(e), e.event_id) for e in harness.published]
    assert [t for t, _ in first] == [ModelDegraded, TrainingRequested]
    await harness.service.on_inspection_completed(tipping)  # redelivered after a crash
    assert [(type(e), e.event_id) for e in harness.published[2:]] == first, "consumers drop these"
    assert len(await harness.store.recent_observations(MODEL, 1, 100)) == 20


async def test_another_event_cannot_fire_a_fired_alarm_again(harness: Harness) -> None:
    """Two instances (or a restart that lost its memory) meeting a claim made by another event."""
    await harness.deploy(1)
    await harness.stream(1, UNSURE, repeat=5)
    other = harness.start()
    harness.service = other
    await harness.stream(1, UNSURE, repeat=1)
    assert len(harness.degraded()) == 1


async def test_kept_observations_are_pruned_as_the_window_moves_on(harness: Harness) -> None:
    await harness.deploy(1)
    await harness.stream(1, CONFIDENT, repeat=5)
    kept = len(harness.store.observations)
    assert RULES.window_size <= kept < 2 * RULES.window_size


# --- gauges ------------------------------------------------------------------------------------


async def test_each_signal_and_its_thresholds_are_gauges_by_model_version_and_signal(
    harness: Harness,
) -> None:
    await harness.deploy(1)
    await harness.stream(1, UNSURE, repeat=5)
    version = {"model": MODEL, "version": "1"}
    values = harness.points("screwops_monitor_signal")
    assert set(values) == {
        labels(**version, signal="score_drift"),
        labels(**version, signal="defect_rate"),
    }
    assert values[labels(**version, signal="defect_rate")] == 0.5
    thresholds = harness.points("screwops_monitor_signal_threshold")
    assert thresholds[labels(**version, signal="score_drift", bound="upper")] >= RULES.max_psi
    assert labels(**version, signal="defect_rate", bound="lower") in thresholds
    assert harness.points("screwops_monitor_signal_fired") == {
        labels(**version, signal="score_drift"): 1,
        labels(**version, signal="defect_rate"): 0,
    }
    assert harness.points("screwops_monitor_alarms") == {
        labels(model=MODEL, signal="score_drift"): 1
    }
    figures = harness.points("screwops_monitor_reference")
    assert figures == {
        labels(**version, figure="defect_rate"): 0.5,
        labels(**version, figure="evaluation_defect_rate"): 0.5,
        labels(**version, figure="evaluation_psi"): pytest.approx(0.0, abs=1e-9),
    }, "the reference is the test split's scores again"


# --- handlers ----------------------------------------------------------------------------------


@dataclass
class Wired:
    bus: Bus
    harness: Harness
    service: MonitorService
    received: list[Event[Any]]


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    bus = memory_bus("monitor")
    harness = Harness()
    service = MonitorService(
        harness.store, harness.objects, bus.publish, rules=RULES, clock=harness.clock
    )
    handlers.register(bus, service)
    received: list[Event[Any]] = []

    @bus.broker.subscriber(Topic.MODEL_DEGRADED)
    async def on_degraded(event: ModelDegraded) -> None:
        received.append(event)

    @bus.broker.subscriber(Topic.TRAINING_REQUESTED)
    async def on_training_requested(event: TrainingRequested) -> None:
        received.append(event)

    async with TestKafkaBroker(bus.broker):
        yield Wired(bus, harness, service, received)


async def test_the_handlers_watch_production_and_announce_on_the_topics(wired: Wired) -> None:
    harness = wired.harness
    harness.put_report("run-1", CONFIDENT)
    await wired.bus.publish(model_deployed(MODEL, 1, run_id="run-1", at=harness.clock()))
    for p in CONFIDENT:  # the reference
        await wired.bus.publish(inspection(1, p))
    sent = [inspection(1, UNSURE[i % 4]) for i in range(20)]
    for event in sent:
        await wired.bus.publish(event)
    await wired.bus.publish(sent[-1])  # redelivered: processed once
    await wired.bus.publish(review(1, "i1", correct=True))

    assert [type(e) for e in wired.received] == [ModelDegraded, TrainingRequested]
    assert {e.causation_id for e in wired.received} == {sent[-1].event_id}
    assert wired.service.handled == {
        Topic.MODEL_DEPLOYED: 1,
        Topic.INSPECTION_COMPLETED: 120,
        Topic.INSPECTION_REVIEWED: 1,
    }
    production = await harness.store.get_production(MODEL)
    assert production is not None
    assert production.version == 1
