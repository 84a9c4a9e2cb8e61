"""The rollout controller on fakes: a bad canary aborted once its sample suffices and not before,
a good one advanced step by step only after each step's minimum inspections and time, request ids
derived from the decision, no decision repeated for a step already left (events out of order,
a restart, a refusal), p99, reviewed accuracy and errors (read from Prometheus, here a fake and
a stand-in HTTP server), shadows measured and never decided on, the watch-window rollback on an
alarm or the error rate, the gauges, and the handlers on FastStream's in-memory broker."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import pytest
from faststream.kafka import TestKafkaBroker
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from screwops_contracts import (
    InspectionCompleted,
    InspectionCompletedPayload,
    InspectionReviewed,
    ModelRolloutChanged,
    Topic,
)
from screwops_errors import FailedPreconditionError, UnavailableError
from screwops_monitor import handlers
from screwops_monitor.config import ControllerRules, Rules
from screwops_monitor.errors import Calls, PrometheusErrorCounts, calls_query
from screwops_monitor.rollouts import RETRY_S, accuracy_check, disagreement_check, latency_check
from screwops_monitor.service import MonitorService

from tests.fakes import FakeObjects, RecordingBus, memory_bus
from tests.support import model_deployed, model_rolled_back
from tests.unit.monitor import builders
from tests.unit.monitor.builders import Change
from tests.unit.monitor.fakes import FakeStore

MODEL = "screw-classifier"
T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
ROLLOUT = "v2-5"
RULES = Rules(reference_size=20, window_size=20, min_observations=20, min_reviews=10)
CONTROL = ControllerRules(
    rollout_max_disagreement=0.02,
    rollout_alpha=0.01,
    rollout_min_compared=100,
    rollout_min_latency_samples=20,
    rollout_p99_margin_ms=5.0,
    rollout_p99_margin_ratio=0.2,
    rollout_min_reviews=10,
    watch_window_s=600.0,
)
MIN_INSPECTIONS = 120
MIN_SECONDS = 60.0


class Clock:
    """Ticks a millisecond a reading; :meth:`skip` jumps ahead."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def skip(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Call:
    kind: Literal["advance", "abort", "rollback"]
    model_name: str
    request_id: str
    reason: str
    rollout_id: str | None = None
    step: int | None = None
    expect_version: int | None = None


@dataclass
class FakeRegistry:
    """Records every call; ``fail`` raises the next calls' errors in turn (then answers)."""

    calls: list[Call] = field(default_factory=list)
    fail: list[Exception] = field(default_factory=list)

    def _answer(self, call: Call) -> None:
        self.calls.append(call)
        if self.fail:
            raise self.fail.pop(0)

    async def advance_rollout(
        self, model_name: str, *, rollout_id: str, step: int, reason: str, request_id: str
    ) -> None:
        self._answer(Call("advance", model_name, request_id, reason, rollout_id, step))

    async def abort_rollout(
        self, model_name: str, *, rollout_id: str, reason: str, request_id: str
    ) -> None:
        self._answer(Call("abort", model_name, request_id, reason, rollout_id))

    async def rollback(
        self, model_name: str, *, expect_version: int, reason: str, request_id: str
    ) -> None:
        self._answer(
            Call("rollback", model_name, request_id, reason, expect_version=expect_version)
        )

    def of(self, kind: str) -> list[Call]:
        return [c for c in self.calls if c.kind == kind]


@dataclass
class FakeErrorCounts:
    """Prometheus's answers, by version and role (absent: no calls; None: it did not answer)."""

    calls_of: dict[tuple[int, str], Calls | None] = field(default_factory=dict)
    asked: list[tuple[int, str, float]] = field(default_factory=list)

    async def calls(self, model_name: str, version: int, role: str, seconds: float) -> Calls | None:
        assert model_name == MODEL
        self.asked.append((version, role, seconds))
        return self.calls_of.get((version, role), Calls(0, 0))


def rollout_changed(
    change: Change,
    *,
    step: int,
    sequence: int,
    at: datetime,
    strategy: Literal["canary", "shadow"] = "canary",
) -> ModelRolloutChanged:
    return builders.rollout_changed(
        MODEL,
        change,
        step=step,
        sequence=sequence,
        at=at,
        strategy=strategy,
        rollout_id=ROLLOUT,
        min_inspections=MIN_INSPECTIONS,
        min_step_seconds=MIN_SECONDS,
    )


def inspection(
    role: Literal["production", "canary"],
    *,
    verdict_defect: bool,
    reference: float | None,
    latency_ms: float = 5.0,
    rollout_id: str = ROLLOUT,
) -> InspectionCompleted:
    """One inspection of the rollout answered by ``role`` (the canary is version 2, production
    version 1), with the other side's off-path score ``reference``."""
    version, other = (2, 1) if role == "canary" else (1, 2)
    return InspectionCompleted.origin(
        InspectionCompletedPayload(
            request_id="req",
            line_id="line-1",
            camera_id="cam-1",
            verdict="DEFECT" if verdict_defect else "GOOD",
            defect_probability=0.9 if verdict_defect else 0.1,
            threshold=0.6 if role == "canary" else 0.5,
            model_name=MODEL,
            model_version=version,
            trace_id="0" * 32,
            latency_ms=latency_ms,
            rollout_id=rollout_id,
            role=role,
            reference_version=other if reference is not None else None,
            reference_probability=reference,
        ),
        producer="gateway",
    )


def review(version: int, inspection_id: str, *, correct: bool) -> InspectionReviewed:
    return builders.review(MODEL, version, inspection_id, correct=correct, reviewed_at=T0)


@dataclass
class Harness:
    store: FakeStore = field(default_factory=FakeStore)
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    clock: Clock = field(default_factory=Clock)
    published: RecordingBus = field(default_factory=lambda: RecordingBus("monitor"))
    control: ControllerRules = CONTROL
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    errors: FakeErrorCounts | None = None
    sequence: int = 1

    def __post_init__(self) -> None:
        self.service = self.start()

    def start(self) -> MonitorService:
        """A monitor process on this store: a second call is the monitor after a restart."""
        self.reader = InMemoryMetricReader()
        return MonitorService(
            self.store,
            FakeObjects(),
            self.published.publish,
            rules=RULES,
            controller_rules=self.control,
            registry=self.registry,
            errors=self.errors,
            clock=self.clock,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
        )

    async def change(
        self,
        change: Change,
        step: int,
        *,
        strategy: Literal["canary", "shadow"] = "canary",
    ) -> ModelRolloutChanged:
        self.sequence += 1
        event = rollout_changed(
            change, step=step, sequence=self.sequence, at=self.clock.now, strategy=strategy
        )
        await self.service.on_rollout_changed(event)
        return event

    async def canary(
        self, n: int, *, disagree_every: int = 0, latency_ms: float = 5.0
    ) -> list[InspectionCompleted]:
        """``n`` canary inspections with production's score beside, every ``disagree_every``th
        one's verdicts differing (0: none)."""
        sent = []
        for i in range(n):
            defect = i % 2 == 0
            disagree = disagree_every > 0 and i % disagree_every == 0
            # Production's threshold is 0.5: 0.7 is DEFECT to it, 0.3 GOOD.
            reference = 0.7 if defect != disagree else 0.3
            event = inspection(
                "canary", verdict_defect=defect, reference=reference, latency_ms=latency_ms
            )
            await self.service.on_inspection_completed(event)
            sent.append(event)
        return sent

    async def production(self, n: int, *, latency_ms: float = 5.0) -> None:
        for i in range(n):
            await self.service.on_inspection_completed(
                inspection(
                    "production", verdict_defect=i % 2 == 0, reference=None, latency_ms=latency_ms
                )
            )

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


@pytest.fixture
def harness() -> Harness:
    return Harness()


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


# --- the tests themselves ----------------------------------------------------------------------


def test_disagreement_is_judged_by_a_one_sided_binomial_test_from_the_minimum_sample() -> None:
    assert disagreement_check(99, 99, CONTROL).outcome == "wait", "fewer than 100 compared"
    failed = disagreement_check(100, 10, CONTROL)
    assert failed.outcome == "fail"
    assert "10/100 (10.00%) against 2.00% tolerated, binomial test p=" in failed.detail
    # 3 % seen, but 3 in 100 is what a 2 % canary shows often: not enough to abort, not
    # enough to advance.
    assert disagreement_check(100, 3, CONTROL).outcome == "wait"
    assert disagreement_check(100, 2, CONTROL).outcome == "pass"


def test_p99_is_judged_by_a_margin_and_accuracy_by_fishers_exact_test() -> None:
    assert latency_check([5.0] * 19, [5.0] * 100, CONTROL).outcome == "wait"
    assert latency_check([11.0] * 20, [5.0] * 20, CONTROL).outcome == "pass", "5 * 1.2 + 5 = 11"
    slow = latency_check([11.5] * 20, [5.0] * 20, CONTROL)
    assert slow.outcome == "fail"
    assert slow.detail.startswith("p99 latency 11.5 ms canary (20) against 5.0 ms production")
    assert accuracy_check([False] * 9, [True] * 50, CONTROL).outcome == "wait"
    assert accuracy_check([True] * 9 + [False], [True] * 10, CONTROL).outcome == "pass"
    worse = accuracy_check([True] * 5 + [False] * 15, [True] * 20, CONTROL)
    assert worse.outcome == "fail"
    assert "5/20 canary against 20/20 production, Fisher's exact test p=" in worse.detail


async def test_a_bad_canary_is_aborted_once_the_sample_suffices_not_before(
    harness: Harness,
) -> None:
    await harness.change("started", 0)
    await harness.production(50)
    await harness.canary(99, disagree_every=3)
    assert harness.registry.calls == [], "99 compared: not judged yet, however bad"

    await harness.canary(1, disagree_every=3)
    [abort] = harness.registry.calls
    assert (abort.kind, abort.rollout_id, abort.request_id) == (
        "abort",
        ROLLOUT,
        f"monitor/{ROLLOUT}/abort",
    )
    assert abort.reason.startswith(
        "canary version 2 at step 0 failed: disagreement 34/100 (34.00%) against 2.00% "
        "tolerated, binomial test p="
    )

    await harness.canary(50, disagree_every=3)
    assert len(harness.registry.calls) == 1, "aborted once"
    await harness.change("aborted", 0)
    await harness.canary(50, disagree_every=3)
    assert len(harness.registry.calls) == 1
    assert harness.points("screwops_monitor_rollout_decisions") == {
        labels(model=MODEL, decision="abort", outcome="done"): 1
    }


async def test_a_good_canary_advances_step_by_step_after_min_inspections_and_min_time(
    harness: Harness,
) -> None:
    await harness.change("started", 0)
    for step in range(3):
        await harness.production(40)
        await harness.canary(MIN_INSPECTIONS)
        assert len(harness.registry.of("advance")) == step, "the step's time has not passed"
        harness.clock.skip(MIN_SECONDS)
        await harness.canary(1)
        calls = harness.registry.of("advance")
        assert len(calls) == step + 1
        assert (calls[-1].step, calls[-1].request_id) == (step, f"monitor/{ROLLOUT}/advance/{step}")
        assert calls[-1].reason.startswith(
            f"step {step} ({[5, 25, 100][step]}%) passed: {MIN_INSPECTIONS + 1} canary "
            "inspections; disagreement 0/"
        )
        await harness.canary(20)
        assert len(harness.registry.of("advance")) == step + 1, "asked once, the change to come"
        if step < 2:
            await harness.change("advanced", step + 1)

    # The last advance completed the rollout: nothing more is asked.
    await harness.change("completed", 2)
    await harness.canary(MIN_INSPECTIONS)
    assert len(harness.registry.calls) == 3
    assert harness.registry.of("abort") == []


async def test_a_step_waits_for_its_minimum_inspections_after_its_time(harness: Harness) -> None:
    await harness.change("started", 0)
    await harness.production(40)
    await harness.canary(100)
    harness.clock.skip(MIN_SECONDS)
    await harness.canary(MIN_INSPECTIONS - 101)
    assert harness.registry.calls == []
    await harness.canary(1)
    assert [c.step for c in harness.registry.of("advance")] == [0]


async def test_a_decision_is_not_repeated_for_a_step_already_left(harness: Harness) -> None:
    started = await harness.change("started", 0)
    await harness.production(40)
    await harness.canary(MIN_INSPECTIONS)
    harness.clock.skip(MIN_SECONDS)
    await harness.canary(1)
    assert [c.step for c in harness.registry.calls] == [0]

    await harness.change("advanced", 1)
    # The start arrives again, late: older than what is kept, so step 0 is not judged again.
    await harness.service.on_rollout_changed(started)
    await harness.production(40)
    await harness.canary(MIN_INSPECTIONS)
    assert [c.step for c in harness.registry.calls] == [0], "step 1's time has not passed"
    kept = await harness.store.get_rollout(MODEL)
    assert kept is not None
    assert kept.rollout.step == 1

    # The registry refuses step 1's advance (an operator advanced it meanwhile): logged and
    # not asked again.
    harness.registry.fail.append(FailedPreconditionError("at step 2, not 1"))
    harness.clock.skip(MIN_SECONDS)
    await harness.canary(30)
    assert [c.step for c in harness.registry.calls] == [0, 1]
    assert harness.points("screwops_monitor_rollout_decisions") == {
        labels(model=MODEL, decision="advance", outcome="done"): 1,
        labels(model=MODEL, decision="advance", outcome="refused"): 1,
    }


async def test_request_ids_are_derived_so_retries_and_restarts_ask_the_same(
    harness: Harness,
) -> None:
    await harness.change("started", 0)
    await harness.production(40)
    await harness.canary(MIN_INSPECTIONS)
    harness.clock.skip(MIN_SECONDS)
    harness.registry.fail.append(UnavailableError("registry down"))
    await harness.canary(5)
    assert len(harness.registry.calls) == 1, "not asked again before the retry delay"
    harness.clock.skip(RETRY_S)
    await harness.canary(1)
    first, retry = harness.registry.calls
    assert first.request_id == retry.request_id == f"monitor/{ROLLOUT}/advance/0"

    # A restart before the change arrived: the rollout is read back from the store, its step's
    # figures count from zero and the same decision is the same request.
    harness.service = harness.start()
    await harness.production(40)
    await harness.canary(MIN_INSPECTIONS - 1)
    assert len(harness.registry.calls) == 2, "the figures count again from zero"
    await harness.canary(1)
    assert [c.request_id for c in harness.registry.calls] == [f"monitor/{ROLLOUT}/advance/0"] * 3


async def test_a_slow_canary_is_aborted_on_its_p99(harness: Harness) -> None:
    await harness.change("started", 0)
    await harness.production(40, latency_ms=10.0)
    await harness.canary(19, latency_ms=30.0)
    assert harness.registry.calls == []
    await harness.canary(1, latency_ms=30.0)
    [abort] = harness.registry.calls
    assert abort.kind == "abort"
    assert "p99 latency 30.0 ms canary (20) against 10.0 ms production (40)" in abort.reason
    assert "disagreement" not in abort.reason, "only the failed check is the reason"


async def test_worse_reviews_abort_a_canary_and_too_few_neither_stop_nor_hold_it(
    harness: Harness,
) -> None:
    await harness.change("started", 0)
    await harness.production(40)
    sent = await harness.canary(MIN_INSPECTIONS)
    for i, event in enumerate(sent[:5]):
        await harness.service.on_inspection_reviewed(review(2, str(event.event_id), correct=i > 2))
    harness.clock.skip(MIN_SECONDS)
    await harness.canary(1)
    assert [c.kind for c in harness.registry.calls] == ["advance"], "5 reviews: not judged"

    await harness.change("advanced", 1)
    for i in range(20):
        await harness.service.on_inspection_reviewed(review(1, f"p{i}", correct=True))
    for event in sent[5:25]:
        await harness.service.on_inspection_reviewed(review(2, str(event.event_id), correct=False))
    assert [c.kind for c in harness.registry.calls] == ["advance", "abort"]
    abort = harness.registry.calls[1]
    assert "reviewed accuracy 2/10 canary against 20/20 production" in abort.reason


async def test_a_shadow_is_measured_and_never_decided_on(harness: Harness) -> None:
    await harness.change("started", 0, strategy="shadow")
    for i in range(300):
        # Production answers; the candidate's off-path score disagrees on every other image.
        await harness.service.on_inspection_completed(
            inspection("production", verdict_defect=False, reference=0.9 if i % 2 else 0.1)
        )
    harness.clock.skip(MIN_SECONDS)
    await harness.production(10)
    assert harness.registry.calls == []
    step = {"model": MODEL, "rollout": ROLLOUT, "strategy": "shadow", "step": "0"}
    assert harness.points("screwops_monitor_rollout_disagreement") == {labels(**step): 0.5}
    samples = harness.points("screwops_monitor_rollout_sample")
    assert samples[labels(**step, figure="compared")] == 300
    assert samples[labels(**step, figure="production")] == 310


async def test_the_gauges_show_the_running_rollout(harness: Harness) -> None:
    await harness.change("started", 0)
    await harness.production(30, latency_ms=8.0)
    await harness.canary(50, disagree_every=25, latency_ms=6.0)
    step = {"model": MODEL, "rollout": ROLLOUT, "strategy": "canary", "step": "0"}
    assert harness.points("screwops_monitor_rollout_disagreement") == {labels(**step): 0.04}
    assert harness.points("screwops_monitor_rollout_sample") == {
        labels(**step, figure="compared"): 50,
        labels(**step, figure="canary"): 50,
        labels(**step, figure="production"): 30,
        labels(**step, figure="canary_reviews"): 0,
        labels(**step, figure="production_reviews"): 0,
    }
    assert harness.points("screwops_monitor_rollout_p99_latency") == {
        labels(**step, role="canary"): 6.0,
        labels(**step, role="production"): 8.0,
    }


# --- errors ------------------------------------------------------------------------------------


async def test_a_canary_failing_requests_is_aborted_on_its_errors_without_any_inspection() -> None:
    harness = Harness(errors=FakeErrorCounts())
    assert harness.errors is not None
    await harness.change("started", 0)
    harness.errors.calls_of[(2, "canary")] = Calls(total=99, failed=99)
    harness.errors.calls_of[(1, "production")] = Calls(total=2000, failed=2)
    await harness.service.check_errors()
    assert harness.registry.calls == [], "99 canary calls: not judged yet"

    harness.errors.calls_of[(2, "canary")] = Calls(total=200, failed=30)
    harness.clock.skip(20)
    await harness.service.check_errors()
    [abort] = harness.registry.calls
    assert abort.kind == "abort"
    assert abort.reason.startswith(
        "canary version 2 at step 0 failed: errors 30/200 canary (15.00%) against 2/2000 "
        "production (0.10%), Fisher's exact test p="
    )
    canary_spans = [seconds for version, role, seconds in harness.errors.asked if role == "canary"]
    assert canary_spans[-1] == pytest.approx(20, abs=0.1), "calls since the step began"


async def test_with_errors_read_a_step_advances_only_once_they_pass() -> None:
    harness = Harness(errors=FakeErrorCounts())
    assert harness.errors is not None
    await harness.change("started", 0)
    await harness.production(40)
    await harness.canary(MIN_INSPECTIONS)
    harness.clock.skip(MIN_SECONDS)
    await harness.canary(1)
    assert harness.registry.calls == [], "errors not read in this step yet"

    harness.errors.calls_of[(2, "canary")] = None
    await harness.service.check_errors()
    assert harness.registry.calls == [], "Prometheus did not answer: held"

    harness.errors.calls_of[(2, "canary")] = Calls(total=150, failed=0)
    harness.errors.calls_of[(1, "production")] = Calls(total=3000, failed=3)
    await harness.service.check_errors()
    [advance] = harness.registry.calls
    assert (advance.kind, advance.step) == ("advance", 0), "advanced by the reading itself"
    assert "errors 0/150 canary (0.00%) against 3/3000 production (0.10%)" in advance.reason

    await harness.change("advanced", 1)
    await harness.production(40)
    await harness.canary(MIN_INSPECTIONS)
    harness.clock.skip(MIN_SECONDS)
    await harness.canary(1)
    assert len(harness.registry.calls) == 1, "the new step's errors are read afresh"
    await harness.service.check_errors()
    assert [c.step for c in harness.registry.calls] == [0, 1]


async def test_the_error_rate_of_a_new_production_rolls_it_back_once() -> None:
    harness = Harness(errors=FakeErrorCounts())
    assert harness.errors is not None
    await deploy(harness, 1)
    deployed = await deploy(harness, 2)
    harness.errors.calls_of[(2, "production")] = Calls(total=500, failed=8)
    harness.clock.skip(30)
    await harness.service.check_errors()
    assert harness.registry.calls == [], "1.6 % over 500 calls: not clearly above a 1 % SLO"

    harness.errors.calls_of[(2, "production")] = Calls(total=500, failed=50)
    await harness.service.check_errors()
    await harness.service.check_errors()
    [rollback] = harness.registry.calls
    assert (rollback.kind, rollback.expect_version, rollback.request_id) == (
        "rollback",
        2,
        f"monitor/rollback/{deployed.event_id}",
    )
    assert rollback.reason.startswith(
        "version 2 breached its error-rate SLO 30s after its deployment: errors 50/500 (10.00%) "
        "against the 1.00% SLO, binomial test p="
    )


async def test_no_error_rollback_after_the_window_or_of_a_rollback() -> None:
    harness = Harness(errors=FakeErrorCounts())
    assert harness.errors is not None
    await deploy(harness, 1)
    await deploy(harness, 2)
    harness.errors.calls_of[(2, "production")] = Calls(total=500, failed=500)
    harness.clock.skip(CONTROL.watch_window_s + 1)
    await harness.service.check_errors()
    assert harness.registry.calls == []
    await harness.service.on_model_rolled_back(model_rolled_back(MODEL, 2, 1, at=harness.clock()))
    harness.errors.calls_of[(1, "production")] = Calls(total=500, failed=500)
    await harness.service.check_errors()
    assert harness.registry.calls == []


class StandIn(BaseHTTPRequestHandler):
    """Prometheus's /api/v1/query, answering every query with the same two series."""

    queries: list[str] = []  # noqa: RUF012 - one server per test

    def do_GET(self) -> None:
        StandIn.queries.append(parse_qs(urlsplit(self.path).query)["query"][0])
        body = json.dumps(
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [
                        {"metric": {"outcome": "answered"}, "value": [0, "190.6"]},
                        {"metric": {"outcome": "failed"}, "value": [0, "9.7"]},
                        {"metric": {"outcome": "no_part"}, "value": [0, "0.2"]},
                    ],
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StandIn.queries = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_prometheus_is_asked_for_the_calls_by_outcome(prometheus: str) -> None:
    counts = PrometheusErrorCounts(prometheus + "/")
    assert await counts.calls(MODEL, 2, "canary", 59.2) == Calls(total=200, failed=10)
    assert StandIn.queries == [calls_query(MODEL, 2, "canary", 59.2)]
    assert StandIn.queries[0] == (
        "sum by (outcome) (increase(screwops_gateway_model_calls_total{model_name="
        '"screw-classifier",model_version="2",role="canary",path="response"}[60s]))'
    )


async def test_prometheus_not_answering_is_unknown() -> None:
    counts = PrometheusErrorCounts("http://127.0.0.1:9", timeout_s=1.0)
    assert await counts.calls(MODEL, 2, "canary", 60) is None


# --- the watch window --------------------------------------------------------------------------


async def deploy(harness: Harness, version: int) -> Any:
    event = model_deployed(MODEL, version, at=harness.clock())
    await harness.service.on_model_deployed(event)
    return event


async def test_an_alarm_within_the_watch_window_rolls_the_new_production_back(
    harness: Harness,
) -> None:
    await deploy(harness, 1)
    deployed = await deploy(harness, 2)
    harness.clock.skip(60)
    bad = [review(2, f"i{i}", correct=False) for i in range(RULES.min_reviews)]
    for event in bad:
        await harness.service.on_inspection_reviewed(event)
    [rollback] = harness.registry.calls
    assert (rollback.kind, rollback.expect_version, rollback.request_id) == (
        "rollback",
        2,
        f"monitor/rollback/{deployed.event_id}",
    )
    assert rollback.reason.startswith(
        "version 2 breached its SLO within 600s of its deployment: accuracy 0.0000 past 0.9000"
    )
    # The review that fired, redelivered: the same request, which the registry answers once.
    await harness.service.on_inspection_reviewed(bad[-1])
    assert [c.request_id for c in harness.registry.calls] == [rollback.request_id] * 2


async def test_no_rollback_after_the_watch_window_or_after_a_rollback(harness: Harness) -> None:
    await deploy(harness, 1)
    await deploy(harness, 2)
    harness.clock.skip(CONTROL.watch_window_s + 1)
    for i in range(RULES.min_reviews):
        await harness.service.on_inspection_reviewed(review(2, f"i{i}", correct=False))
    assert harness.registry.calls == [], "past the window: the alarm and retraining only"

    await harness.service.on_model_rolled_back(model_rolled_back(MODEL, 2, 1, at=harness.clock()))
    for i in range(RULES.min_reviews):
        await harness.service.on_inspection_reviewed(review(1, f"j{i}", correct=False))
    assert harness.registry.calls == [], "a rollback's move is not rolled back"


async def test_a_refused_rollback_is_counted_and_not_raised(harness: Harness) -> None:
    harness.registry.fail.append(FailedPreconditionError("no earlier version"))
    await deploy(harness, 1)
    for i in range(RULES.min_reviews):
        await harness.service.on_inspection_reviewed(review(1, f"i{i}", correct=False))
    assert [c.kind for c in harness.registry.calls] == ["rollback"]
    assert harness.points("screwops_monitor_rollout_decisions") == {
        labels(model=MODEL, decision="rollback", outcome="refused"): 1
    }


# --- handlers ----------------------------------------------------------------------------------


@dataclass
class Wired:
    harness: Harness
    publish: Any


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    bus = memory_bus("monitor")
    harness = Harness()
    handlers.register(bus, harness.service)
    async with TestKafkaBroker(bus.broker):
        yield Wired(harness, bus.publish)


async def test_the_handlers_follow_rollouts_and_abort_a_bad_canary(wired: Wired) -> None:
    harness = wired.harness
    await wired.publish(rollout_changed("started", step=0, sequence=2, at=harness.clock.now))
    for i in range(CONTROL.rollout_min_compared):
        await wired.publish(
            inspection("canary", verdict_defect=True, reference=0.2 if i % 2 else 0.9)
        )
    assert [c.kind for c in harness.registry.calls] == ["abort"]
    assert harness.service.handled == {
        Topic.MODEL_ROLLOUT_CHANGED: 1,
        Topic.INSPECTION_COMPLETED: CONTROL.rollout_min_compared,
    }
