"""The rollout controller: one place that decides, from every gateway replica's inspections, whether
a canary advances, is aborted, or a new production is rolled back.

Why in the monitor: the monitor already consumes ``inspection.completed`` from every gateway
replica and keeps windows of it, so it sees the aggregated figures a gateway replica does not;
the registry stays the only writer of rollout state, and the controller only asks it
(``AdvanceRollout``, ``AbortRollout``, ``Rollback``) as its own principal.

What it watches. The registry announces each change of a rollout (``model.rollout_changed``,
numbered by production's sequence); the controller keeps the newest (in its store, so a restart
knows the running rollout) and counts, for the running rollout, from ``inspection.completed``:

* **disagreement**: canary inspections whose verdict differs from production's on the same image
  (the gateway has production score the canary's requests off the response path and reports it as
  ``reference_probability``; production's verdict is that score at production's threshold).
  Counted over the whole rollout, since the canary and production are the same models at every
  step and more images make the test stronger. Judged by a one-sided exact binomial test against
  the tolerated share (``rollout_max_disagreement``): aborted when the share is above it at
  ``rollout_alpha``, once ``rollout_min_compared`` images are compared (never before: a few
  early disagreements are noise). A step advances only while the share seen is at most the
  tolerated one; between the two it holds, and more images decide.
* **p99 latency** of each side's inspections in the current step (the load changes with the
  share): aborted when the canary's exceeds production's by more than the margin
  (``production * (1 + rollout_p99_margin_ratio) + rollout_p99_margin_ms``), once each side has
  ``rollout_min_latency_samples``; a step advances only once that is judged.
* **reviewed accuracy**, when people review inspections of both sides during the rollout
  (``inspection.reviewed``): Fisher's exact test, one-sided, of the canary's right and wrong
  against production's; aborted below ``rollout_alpha``. Optional: with fewer than
  ``rollout_min_reviews`` a side, reviews neither stop nor hold a step.

A step advances when it has the registry's minimum inspections (the canary's, in this step) and
minimum time (from the change that began or resumed it), and every check passes. The decision is
taken when an inspection or a review arrives, and at each reading of the errors.

* **errors**: a failed inspection is not in ``inspection.completed``, so failures come from the
  gateways' per-version call counter through Prometheus (:mod:`screwops_monitor.errors`), read
  every ``errors_interval_s`` for the calls each side answered since the step began: Fisher's
  exact test, one-sided, of the canary's failed and answered calls against production's; aborted
  below ``rollout_alpha`` once each side has ``rollout_min_calls``. Where errors are judged
  (``judge_errors``), a step advances only once they are read and pass (never on errors nobody
  could read); the same reading advances a step whose time passed without waiting for another
  inspection, and judges a canary that fails every request, which publishes no inspection.

Idempotence. Each request to the registry carries a request id derived from what it decides
(``monitor/<rollout>/advance/<step>``, ``monitor/<rollout>/abort``,
``monitor/rollback/<event id of the move>``), so a repeated decision, from a redelivery or a
restart, is answered with the first call's change; an advance also names the step it was judged
at, so one judged on a step the rollout has left is refused (FAILED_PRECONDITION) and only logged.
A rollout change not newer than the one kept (events out of order) is ignored. The figures live in
this process: after a restart a step counts again from zero, which delays a decision and never
makes one on fewer figures than the settings ask.

Shadow rollouts are measured (the disagreement between production's answer and the candidate's
off-path score) and never decided on: a shadow serves nobody, so aborting protects nothing, and
advancing it would complete it, moving production to a version whose latency on the response path
nobody measured. An operator decides those.

The watch window: after production moves forward (``model.deployed``) the monitor's alarms on the
new version (score drift, defect rate, reviewed accuracy) also roll it back, for
``watch_window_s``, and so does its error rate, judged against ``watch_max_error_rate`` by a
one-sided binomial test (see :meth:`RolloutController.watch_errors`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from opentelemetry.metrics import CallbackOptions
from opentelemetry.metrics import Observation as Measurement
from scipy import stats
from screwops_contracts import (
    InspectionCompleted,
    InspectionReviewed,
    ModelRolloutChanged,
    ModelRolloutChangedPayload,
)
from screwops_contracts.limits import MAX_REASON_CHARS
from screwops_errors import FailedPreconditionError, NotFoundError, ScrewOpsError

from screwops_monitor.config import ControllerRules
from screwops_monitor.errors import Calls, ErrorCounts
from screwops_monitor.metrics import MonitorMetrics
from screwops_monitor.store import MonitorStore, RolloutRecord

log = logging.getLogger("screwops.monitor.rollouts")

__all__ = [
    "CANARY",
    "PRODUCTION",
    "RETRY_S",
    "Check",
    "Decision",
    "Registry",
    "RolloutController",
    "Tally",
    "accuracy_check",
    "disagreement_check",
    "error_check",
    "error_slo_check",
    "judge",
    "latency_check",
]

Role = Literal["production", "canary"]
PRODUCTION: Role = "production"
CANARY: Role = "canary"
Outcome = Literal["pass", "wait", "fail"]

RETRY_S = 5.0
"""Least time between two calls for a decision the registry did not answer (unavailable, or
refused for a reason a later call may not meet, such as a token): every inspection would call."""


class Registry(Protocol):
    """What the controller asks of the registry. Each call names itself with ``request_id``.

    Raises (each call):
        FailedPreconditionError: the rollout (or production) is no longer as the decision saw it.
        NotFoundError: no such model or rollout.
        ScrewOpsError: any other failure (TransientError when a retry may succeed).
    """

    async def advance_rollout(
        self, model_name: str, *, rollout_id: str, step: int, reason: str, request_id: str
    ) -> None: ...

    async def abort_rollout(
        self, model_name: str, *, rollout_id: str, reason: str, request_id: str
    ) -> None: ...

    async def rollback(
        self, model_name: str, *, expect_version: int, reason: str, request_id: str
    ) -> None: ...


@dataclass(frozen=True)
class Check:
    """One named test of a rollout's figures: its outcome and the figures it was judged on."""

    name: str
    outcome: Outcome
    detail: str


def disagreement_check(compared: int, disagreements: int, rules: ControllerRules) -> Check:
    """The canary's verdict disagreement with production's, by a one-sided exact binomial test
    against the tolerated share (see the module docstring)."""
    tolerated = rules.rollout_max_disagreement
    if compared < rules.rollout_min_compared:
        return Check(
            "disagreement",
            "wait",
            f"disagreement {disagreements}/{compared}, fewer than {rules.rollout_min_compared} "
            "compared",
        )
    share = disagreements / compared
    p_value = stats.binomtest(disagreements, compared, tolerated, alternative="greater").pvalue
    figures = (
        f"disagreement {disagreements}/{compared} ({share:.2%}) against {tolerated:.2%} "
        f"tolerated, binomial test p={p_value:.3g} (alpha {rules.rollout_alpha:g})"
    )
    if p_value < rules.rollout_alpha:
        return Check("disagreement", "fail", figures)
    return Check("disagreement", "pass" if share <= tolerated else "wait", figures)


def latency_check(
    canary: Iterable[float], production: Iterable[float], rules: ControllerRules
) -> Check:
    """The canary's p99 latency in the step against production's plus the margin."""
    ours, theirs = np.fromiter(canary, float), np.fromiter(production, float)
    least = rules.rollout_min_latency_samples
    if too_few := _too_few("p99", "p99 latency", len(ours), len(theirs), "inspections", least):
        return too_few
    p99_canary, p99_production = _p99(ours), _p99(theirs)
    bound = p99_production * (1 + rules.rollout_p99_margin_ratio) + rules.rollout_p99_margin_ms
    figures = (
        f"p99 latency {p99_canary:.1f} ms canary ({len(ours)}) against {p99_production:.1f} ms "
        f"production ({len(theirs)}), margin to {bound:.1f} ms"
    )
    return Check("p99", "fail" if p99_canary > bound else "pass", figures)


def _too_few(
    name: str, measure: str, canary: int, production: int, unit: str, least: int
) -> Check | None:
    """The check ``name`` waiting while either side has fewer than ``least`` of ``unit``."""
    if canary < least or production < least:
        return Check(
            name,
            "wait",
            f"{measure} on {canary} canary and {production} production {unit}, fewer than "
            f"{least} a side",
        )
    return None


def accuracy_check(
    canary: Iterable[bool], production: Iterable[bool], rules: ControllerRules
) -> Check:
    """The canary's reviewed accuracy against production's, by Fisher's exact test (one-sided:
    the canary is worse)."""
    ours, theirs = list(canary), list(production)
    least = rules.rollout_min_reviews
    if too_few := _too_few(
        "accuracy", "reviewed accuracy", len(ours), len(theirs), "reviews", least
    ):
        return too_few
    right, right_production = sum(ours), sum(theirs)
    table = [[right, len(ours) - right], [right_production, len(theirs) - right_production]]
    p_value = float(stats.fisher_exact(table, alternative="less").pvalue)
    figures = (
        f"reviewed accuracy {right}/{len(ours)} canary against {right_production}/{len(theirs)} "
        f"production, Fisher's exact test p={p_value:.3g} (alpha {rules.rollout_alpha:g})"
    )
    return Check("accuracy", "fail" if p_value < rules.rollout_alpha else "pass", figures)


def error_check(canary: Calls | None, production: Calls | None, rules: ControllerRules) -> Check:
    """The canary's share of failed calls in the step against production's, by Fisher's exact
    test (one-sided: the canary fails more)."""
    least = rules.rollout_min_calls
    if canary is None or production is None:
        return Check("errors", "wait", "errors unknown: Prometheus did not answer")
    if canary.total < least or production.total < least:
        return Check(
            "errors",
            "wait",
            f"errors on {canary.total} canary and {production.total} production calls, fewer "
            f"than {least} a side",
        )
    table = [
        [canary.failed, canary.total - canary.failed],
        [production.failed, production.total - production.failed],
    ]
    p_value = float(stats.fisher_exact(table, alternative="greater").pvalue)
    figures = (
        f"errors {canary.failed}/{canary.total} canary ({canary.rate:.2%}) against "
        f"{production.failed}/{production.total} production ({production.rate:.2%}), Fisher's "
        f"exact test p={p_value:.3g} (alpha {rules.rollout_alpha:g})"
    )
    return Check("errors", "fail" if p_value < rules.rollout_alpha else "pass", figures)


def error_slo_check(calls: Calls | None, rules: ControllerRules) -> Check:
    """A production's share of failed calls against its SLO, by a one-sided exact binomial
    test."""
    if calls is None:
        return Check("errors", "wait", "errors unknown: Prometheus did not answer")
    slo = rules.watch_max_error_rate
    if calls.total < rules.rollout_min_calls:
        return Check(
            "errors", "wait", f"errors on {calls.total} calls, fewer than {rules.rollout_min_calls}"
        )
    p_value = stats.binomtest(calls.failed, calls.total, slo, alternative="greater").pvalue
    figures = (
        f"errors {calls.failed}/{calls.total} ({calls.rate:.2%}) against the {slo:.2%} SLO, "
        f"binomial test p={p_value:.3g} (alpha {rules.rollout_alpha:g})"
    )
    return Check("errors", "fail" if p_value < rules.rollout_alpha else "pass", figures)


def _p99(latencies: npt.NDArray[np.float64]) -> float:
    return float(np.percentile(latencies, 99, method="higher"))


@dataclass
class Tally:
    """What the controller knows of a model's latest rollout: the registry's last change of it,
    and its figures (see the module docstring for which count over the rollout, which per step)."""

    record: RolloutRecord
    latency_window: int
    compared: int = 0
    disagreements: int = 0
    step_inspections: Counter[Role] = field(default_factory=Counter)
    latencies: dict[Role, deque[float]] = field(default_factory=dict)
    reviews: dict[Role, dict[str, bool]] = field(
        default_factory=lambda: {CANARY: {}, PRODUCTION: {}}
    )
    errors: Check | None = None
    """The step's latest reading of the errors (None: not read in this step)."""
    advanced_at: int | None = None
    """The step the controller asked to leave, until the change arrives."""
    aborted: bool = False
    retry_after: datetime | None = None

    def __post_init__(self) -> None:
        self.new_step()

    @property
    def rollout(self) -> ModelRolloutChangedPayload:
        return self.record.rollout

    def new_step(self) -> None:
        self.errors = None
        self.step_inspections = Counter()
        self.latencies = {role: deque(maxlen=self.latency_window) for role in (CANARY, PRODUCTION)}

    def take(self, inspected: InspectionCompleted) -> bool:
        """Count one inspection of this rollout; False when it is of neither side."""
        payload, rollout = inspected.payload, self.rollout
        role = payload.role
        served = rollout.candidate if role == CANARY else rollout.production
        if role is None or payload.model_version != served.version:
            return False
        self.step_inspections[role] += 1
        self.latencies[role].append(payload.latency_ms)
        # The other side's score of the same image: production's beside a canary, the
        # candidate's beside production in a shadow rollout.
        other = rollout.production if role == CANARY else rollout.candidate
        if payload.reference_probability is not None and payload.reference_version == other.version:
            self.compared += 1
            theirs = payload.reference_probability >= other.threshold
            self.disagreements += theirs != (payload.verdict == "DEFECT")
        return True

    def review(self, reviewed: InspectionReviewed) -> bool:
        """Keep one review of either side's inspection (a later one replaces it)."""
        payload, rollout = reviewed.payload, self.rollout
        sides = {rollout.candidate.version: CANARY, rollout.production.version: PRODUCTION}
        role = sides.get(payload.model_version)
        if role is None:
            return False
        self.reviews[role][payload.inspection_id] = payload.verdict_correct
        return True

    def checks(self, rules: ControllerRules) -> list[Check]:
        return [
            disagreement_check(self.compared, self.disagreements, rules),
            latency_check(self.latencies[CANARY], self.latencies[PRODUCTION], rules),
            accuracy_check(self.reviews[CANARY].values(), self.reviews[PRODUCTION].values(), rules),
        ]


@dataclass(frozen=True)
class Decision:
    """What :func:`judge` concluded of a running canary: advance, abort or hold, and why."""

    action: Literal["advance", "abort", "hold"]
    checks: tuple[Check, ...]

    @property
    def reason(self) -> str:
        shown = [c for c in self.checks if c.outcome == "fail"] if self.action == "abort" else []
        return "; ".join(c.detail for c in shown or self.checks)


# The checks a step needs passed to advance; the others (reviews) only stop a canary.
REQUIRED = ("disagreement", "p99", "errors")


def judge(tally: Tally, rules: ControllerRules, now: datetime, *, errors: bool = False) -> Decision:
    """Abort on any failed check; advance once the step has its minimums and the required checks
    pass (the errors among them when ``errors`` are read); else hold."""
    checks = tuple(tally.checks(rules))
    if errors:
        checks += (tally.errors or Check("errors", "wait", "errors not read in this step yet"),)
    if any(c.outcome == "fail" for c in checks):
        return Decision("abort", checks)
    rollout = tally.record.rollout
    elapsed = (now - tally.record.step_started_at).total_seconds()
    ready = (
        tally.step_inspections[CANARY] >= rollout.min_inspections
        and elapsed >= rollout.min_step_seconds
        and all(c.outcome == "pass" for c in checks if c.name in REQUIRED)
    )
    return Decision("advance" if ready else "hold", checks)


class RolloutController:
    """Follows the model's rollouts and decides on canaries (see the module docstring)."""

    def __init__(
        self,
        store: MonitorStore,
        registry: Registry | None,
        *,
        rules: ControllerRules,
        metrics: MonitorMetrics,
        clock: Callable[[], datetime],
        errors: ErrorCounts | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._errors = errors
        self._rolled_back: set[str] = set()
        self._rules = rules.controller()
        self._metrics = metrics
        self._clock = clock
        # Absent: not loaded since the start; None: the model never had a rollout.
        self._tallies: dict[str, Tally | None] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def on_rollout_changed(self, event: ModelRolloutChanged) -> None:
        """Keep the change unless a newer one is kept; a new step counts from zero."""
        change = event.payload
        async with self._locks[change.model_name]:
            tally = await self._tally(change.model_name)
            before = tally.record if tally is not None else None
            if before is not None and before.rollout.sequence >= change.sequence:
                log.info(
                    "ignoring rollout %s of %s %s (sequence %d): sequence %d is kept",
                    change.rollout_id,
                    change.model_name,
                    change.change,
                    change.sequence,
                    before.rollout.sequence,
                )
                return
            same = before is not None and before.rollout.rollout_id == change.rollout_id
            restarts = change.change in ("started", "advanced", "resumed") or not same
            record = RolloutRecord(
                rollout=change,
                step_started_at=event.occurred_at
                if restarts or before is None
                else before.step_started_at,
            )
            if not await self._store.save_rollout(record):
                self._tallies.pop(change.model_name, None)  # another instance kept a newer one
                return
            if tally is None or not same:
                self._tallies[change.model_name] = Tally(record, self._rules.rollout_latency_window)
            else:
                tally.record = record
                if restarts:
                    tally.new_step()
                    tally.advanced_at = None
            log.info(
                "%s rollout %s of %s version %d %s: step %d of %d, %s%%",
                change.strategy,
                change.rollout_id,
                change.model_name,
                change.candidate.version,
                change.change,
                change.step + 1,
                len(change.steps),
                change.share,
            )

    async def on_inspection(self, event: InspectionCompleted) -> None:
        """Count an inspection of the running rollout, then decide on a canary."""
        inspected = event.payload
        if inspected.rollout_id is None:
            return
        async with self._locks[inspected.model_name]:
            tally = await self._tally(inspected.model_name)
            if tally is None or tally.rollout.rollout_id != inspected.rollout_id:
                return
            if tally.take(event):
                await self._decide(tally)

    async def on_review(self, event: InspectionReviewed) -> None:
        """Keep a review of either side of the running rollout."""
        reviewed = event.payload
        async with self._locks[reviewed.model_name]:
            tally = await self._tally(reviewed.model_name)
            if tally is not None and tally.rollout.state == "running" and tally.review(event):
                await self._decide(tally)

    async def roll_back(self, model_name: str, version: int, moved_by: str, reason: str) -> None:
        """Ask the registry to put production back from ``version``, which the move event
        ``moved_by`` made production; the request id is derived from that move, so one move is
        rolled back once however often its alarms are redelivered. Without a registry (measuring
        only) it is logged.

        Raises:
            TransientError: the registry did not answer (the caller's event is retried).
        """
        if self._registry is None:
            log.warning(
                "not rolling %s back from version %d (no registry): %s", model_name, version, reason
            )
            return
        request_id = f"monitor/rollback/{moved_by}"
        try:
            await self._registry.rollback(
                model_name, expect_version=version, reason=_bounded(reason), request_id=request_id
            )
        except (FailedPreconditionError, NotFoundError) as refused:
            log.warning(
                "the registry refused to roll %s back from version %d: %s",
                model_name,
                version,
                refused.message,
            )
            self._rolled_back.add(moved_by)
            self._metrics.rollout_decided(model_name, "rollback", "refused")
            return
        self._rolled_back.add(moved_by)
        log.warning("rolled %s back from version %d: %s", model_name, version, reason)
        self._metrics.rollout_decided(model_name, "rollback", "done")

    async def check_errors(self) -> None:
        """Read each running canary's and its production's failed calls since the step began,
        and decide on them (see the module docstring)."""
        if self._errors is None:
            return
        for tally in self._followed():
            rollout = tally.rollout
            if rollout.strategy != "canary" or rollout.state != "running":
                continue
            seconds = (self._clock() - tally.record.step_started_at).total_seconds()
            name = rollout.model_name
            canary = await self._errors.calls(name, rollout.candidate.version, CANARY, seconds)
            production = await self._errors.calls(
                name, rollout.production.version, PRODUCTION, seconds
            )
            async with self._locks[name]:
                if self._tallies.get(name) is tally and tally.rollout is rollout:
                    tally.errors = error_check(canary, production, self._rules)
                    await self._decide(tally)

    async def watch_errors(
        self, model_name: str, version: int, since: datetime, moved_by: str
    ) -> None:
        """Roll ``version`` back when its error rate since the move ``moved_by`` made it
        production breaches the SLO (asked once per move; see :meth:`roll_back`).

        Raises:
            TransientError: the registry did not answer (asked again at the next reading).
        """
        if self._errors is None or moved_by in self._rolled_back:
            return
        seconds = (self._clock() - since).total_seconds()
        check = error_slo_check(
            await self._errors.calls(model_name, version, PRODUCTION, seconds), self._rules
        )
        if check.outcome != "fail":
            return
        await self.roll_back(
            model_name,
            version,
            moved_by,
            f"version {version} breached its error-rate SLO {seconds:.0f}s after its "
            f"deployment: {check.detail}",
        )

    async def _decide(self, tally: Tally) -> None:
        """Judge a running canary and ask for what the figures say, once per step (an advance)
        or once per rollout (an abort)."""
        registry, rollout = self._registry, tally.rollout
        if registry is None or rollout.strategy != "canary" or rollout.state != "running":
            return
        now = self._clock()
        if tally.aborted or (tally.retry_after is not None and now < tally.retry_after):
            return
        decision = judge(tally, self._rules, now, errors=self._errors is not None)
        if decision.action == "abort":
            reason = (
                f"canary version {rollout.candidate.version} at step {rollout.step} failed: "
                f"{decision.reason}"
            )
            tally.aborted = await self._ask(
                tally,
                "abort",
                registry.abort_rollout(
                    rollout.model_name,
                    rollout_id=rollout.rollout_id,
                    reason=_bounded(reason),
                    request_id=f"monitor/{rollout.rollout_id}/abort",
                ),
            )
        elif decision.action == "advance" and tally.advanced_at != rollout.step:
            reason = (
                f"step {rollout.step} ({rollout.steps[rollout.step]:g}%) passed: "
                f"{tally.step_inspections[CANARY]} canary inspections; {decision.reason}"
            )
            asked = await self._ask(
                tally,
                "advance",
                registry.advance_rollout(
                    rollout.model_name,
                    rollout_id=rollout.rollout_id,
                    step=rollout.step,
                    reason=_bounded(reason),
                    request_id=f"monitor/{rollout.rollout_id}/advance/{rollout.step}",
                ),
            )
            if asked:
                tally.advanced_at = rollout.step

    async def _ask(self, tally: Tally, decision: str, call: Awaitable[None]) -> bool:
        """Make ``call``; True once the registry made or refused it for good (not asked again),
        False when it may be asked again after :data:`RETRY_S`."""
        rollout = tally.rollout
        try:
            await call
        except (FailedPreconditionError, NotFoundError) as refused:
            log.warning(
                "the registry refused to %s rollout %s of %s: %s",
                decision,
                rollout.rollout_id,
                rollout.model_name,
                refused.message,
            )
            self._metrics.rollout_decided(rollout.model_name, decision, "refused")
            return True
        except ScrewOpsError as failed:
            log.error(
                "could not ask the registry to %s rollout %s of %s (again in %gs): %s",
                decision,
                rollout.rollout_id,
                rollout.model_name,
                RETRY_S,
                failed.message,
            )
            tally.retry_after = self._clock() + timedelta(seconds=RETRY_S)
            self._metrics.rollout_decided(rollout.model_name, decision, "failed")
            return False
        log.warning(
            "asked to %s rollout %s of %s", decision, rollout.rollout_id, rollout.model_name
        )
        self._metrics.rollout_decided(rollout.model_name, decision, "done")
        tally.retry_after = None
        return True

    async def _tally(self, model_name: str) -> Tally | None:
        """The model's latest rollout, read from the store the first time (its figures from
        zero)."""
        if model_name not in self._tallies:
            record = await self._store.get_rollout(model_name)
            self._tallies[model_name] = (
                None if record is None else Tally(record, self._rules.rollout_latency_window)
            )
        return self._tallies[model_name]

    # --- gauges ----------------------------------------------------------------------------

    def _followed(self) -> list[Tally]:
        # Called from the metrics exporter's thread: take a snapshot of the dict first.
        return [t for t in list(self._tallies.values()) if t is not None]

    def observe_disagreement(self, options: CallbackOptions) -> Iterable[Measurement]:
        for tally in self._followed():
            if tally.compared:
                yield Measurement(tally.disagreements / tally.compared, _labels(tally))

    def observe_samples(self, options: CallbackOptions) -> Iterable[Measurement]:
        for tally in self._followed():
            labels = _labels(tally)
            yield Measurement(tally.compared, labels | {"figure": "compared"})
            for role in (CANARY, PRODUCTION):
                yield Measurement(tally.step_inspections[role], labels | {"figure": role})
                yield Measurement(len(tally.reviews[role]), labels | {"figure": f"{role}_reviews"})

    def observe_p99(self, options: CallbackOptions) -> Iterable[Measurement]:
        for tally in self._followed():
            for role in (CANARY, PRODUCTION):
                latencies = list(tally.latencies[role])
                if latencies:
                    yield Measurement(
                        _p99(np.asarray(latencies, float)), _labels(tally) | {"role": role}
                    )


def _bounded(reason: str) -> str:
    """``reason`` within what the registry records of one."""
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def _labels(tally: Tally) -> dict[str, str]:
    rollout = tally.rollout
    return {
        "model": rollout.model_name,
        "rollout": rollout.rollout_id,
        "strategy": rollout.strategy,
        "step": str(rollout.step),
    }
