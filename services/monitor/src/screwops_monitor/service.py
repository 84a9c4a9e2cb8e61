"""The monitor's domain logic: the production model's inspections in, alarms and retraining out.

The monitor follows ``production`` from the registry's ``model.deployed`` and
``model.rolled_back``. Each time production moves, the version starts a reference window: its
first inspections on the line (``reference_size`` of them, over at least ``reference_min_s``).
The reference, not the version's evaluation, is the baseline of the score-drift and defect-rate
signals: the evaluation's test split is balanced for judging a model (a quarter to a half
defective), a line may run at 1%, and a line should raise no alarm for being itself. Until the
reference is full neither signal is judged; the accuracy on reviews needs no reference and is
judged from the start.

The evaluation report of the run the version came from (``models/evaluations/<evaluation id>.json``,
the id derived from the run as the evaluator derives it) is still read, for two things: the
dataset it was trained on, which a retraining request names, and its test-split scores, set beside
the full reference as a sanity check (gauge ``screwops_monitor_reference``: PSI between the two
and both defect rates). A line unlike the test data from its first inspection is a shift the
reference takes in as normal, so that check is what shows it; it raises no alarm, since the class
mix alone makes the two differ.

Every later ``inspection.completed`` of the production version goes into a window of the latest
inspections, and every ``inspection.reviewed`` into a window of the latest reviews; the signals
of :mod:`screwops_monitor.signals` are judged on them after each event and exposed as gauges.
When a signal crosses its threshold the monitor announces ``model.degraded`` and asks the trainer
for a new model with ``training.requested`` (on the production model's dataset, newest version:
whatever the reviews have added since). Two brakes keep that from looping: an alarm fires once
and re-arms only after its signal has come back past a lower level (hysteresis), and a model gets
at most one training request per cooldown, whichever signals fire. A new production version
starts with an empty reference, empty windows and armed alarms; the cooldown outlives it.

Everything needed to carry on after a restart is in MongoDB (see :mod:`screwops_monitor.store`):
the reference and the windows are rebuilt from the kept observations the first time a model's
event arrives, and the alarms and the cooldown are claims written before the events that announce
them, naming the event that caused them, so a redelivered cause announces again with the same
event ids (which consumers drop) and a later one finds the alarm fired or the cooldown running.

The monitor is also the rollout controller (:mod:`screwops_monitor.rollouts`): it follows
``model.rollout_changed``, counts every inspection and review of a running rollout, and asks the
registry to advance or abort a canary. After production moves forward (``model.deployed``), an
alarm of the new version within ``watch_window_s`` also asks the registry to roll it back, and so
does its error rate: :meth:`MonitorService.run_error_checks` reads the failures from Prometheus
every ``errors_interval_s`` for the running canaries and the watched productions.

The windows live in this process, so the monitor runs as one instance: a second one would see
only the inspections of its partitions. The claims keep even two from asking twice.

Nothing here imports a broker, driver or gRPC: the store, the object store and the bus come in as
the interfaces below.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider
from opentelemetry.metrics import Observation as Measurement
from pydantic import ValidationError
from screwops_bus import Publish
from screwops_contracts import (
    Event,
    InspectionCompleted,
    InspectionReviewed,
    ModelDegraded,
    ModelDegradedPayload,
    ModelDeployed,
    ModelRolledBack,
    ModelRolloutChanged,
    TrainingRequested,
    TrainingRequestedPayload,
)
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import (
    EvaluationScores,
    evaluation_id_of,
    evaluation_report_key,
)
from screwops_errors import NotFoundError

from screwops_monitor.config import ControllerRules, Rules
from screwops_monitor.errors import ErrorCounts
from screwops_monitor.metrics import MonitorMetrics
from screwops_monitor.rollouts import Registry, RolloutController
from screwops_monitor.signals import (
    Baseline,
    Observation,
    Reading,
    ReferenceWindow,
    Review,
    ReviewWindow,
    ScoreWindow,
    accuracy,
    decide,
    defect_rate,
    histogram,
    psi,
    score_drift,
)
from screwops_monitor.store import (
    Firing,
    MonitorStore,
    Objects,
    Production,
    ServedVersion,
    TrainingClaim,
)

log = logging.getLogger("screwops.monitor")

__all__ = ["MonitorService", "Watch"]

INSPECTIONS = "inspections"
REVIEWS = "reviews"
REFERENCE = "reference"


@dataclass
class Watch:
    """What the monitor holds of one model in production: the version, its baseline, its
    reference, the two windows, the fired alarms (signal -> the event that fired it), the latest
    readings and, once the reference is full, its figures beside the evaluation's."""

    production: Production
    served: ServedVersion | None
    reference: ReferenceWindow
    scores: ScoreWindow
    reviews: ReviewWindow
    fired: dict[str, str]
    readings: dict[str, Reading] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)
    unpruned: Counter[str] = field(default_factory=Counter)

    @property
    def model_name(self) -> str:
        return self.production.model_name

    @property
    def version(self) -> int:
        return self.production.version


class MonitorService:
    """Watches the production model and asks for retraining, and controls rollouts (see the
    module docstring). Without a registry the rollouts are measured, never decided on."""

    def __init__(
        self,
        store: MonitorStore,
        objects: Objects,
        publish: Publish,
        *,
        rules: Rules,
        controller_rules: ControllerRules | None = None,
        registry: Registry | None = None,
        errors: ErrorCounts | None = None,
        producer: str = "monitor",
        clock: Callable[[], datetime] | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._store = store
        self._objects = objects
        self._publish = publish
        self._rules = rules.rules()
        self._producer = producer
        self._clock = clock or (lambda: datetime.now(UTC))
        self._cooldown = timedelta(seconds=self._rules.cooldown_s)
        # None: the model has no production version (yet); absent: not loaded since the start.
        self._watches: dict[str, Watch | None] = {}
        # Every model whose production moved or was loaded: the watched ones are among them.
        self._models: set[str] = set()
        # Handlers of different topics run concurrently; one model's state changes one at a time.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.handled: Counter[str] = Counter()
        """Events handled to the end (their announcements acknowledged), by topic."""

        self._metrics = MonitorMetrics(
            signals=self._observe_values,
            thresholds=self._observe_thresholds,
            fired=self._observe_fired,
            windows=self._observe_windows,
            reference=self._observe_reference,
            rollout_disagreement=lambda options: self._controller.observe_disagreement(options),
            rollout_samples=lambda options: self._controller.observe_samples(options),
            rollout_p99=lambda options: self._controller.observe_p99(options),
            meter_provider=meter_provider,
        )
        self._controller_rules = (controller_rules or ControllerRules()).controller()
        self._controller = RolloutController(
            store,
            registry,
            rules=self._controller_rules,
            metrics=self._metrics,
            clock=self._now,
            errors=errors,
        )

    # --- events ----------------------------------------------------------------------------

    async def on_model_deployed(self, event: ModelDeployed) -> None:
        """A new production version: read its evaluation, start its reference and windows afresh."""
        deployed = event.payload
        baseline = await self._baseline(deployed.model_name, deployed.run_id)
        await self._store.save_version(
            ServedVersion(deployed.model_name, deployed.version, deployed.run_id, baseline)
        )
        await self._move(event, deployed.model_name, deployed.version)
        self.handled[event.TOPIC] += 1

    async def on_model_rolled_back(self, event: ModelRolledBack) -> None:
        """Production went back to an earlier version: watch it afresh, from a new reference (the
        line may have changed since it left); its own evaluation still names its dataset."""
        rolled = event.payload
        served = await self._store.get_version(rolled.model_name, rolled.to_version)
        if served is None:
            log.warning(
                "%s rolled back to version %d, which was never seen deployed: no baseline",
                rolled.model_name,
                rolled.to_version,
            )
        elif served.baseline is None:
            baseline = await self._baseline(rolled.model_name, served.run_id)
            if baseline is not None:
                served = replace(served, baseline=baseline)
                await self._store.save_version(served)
        await self._move(event, rolled.model_name, rolled.to_version)
        self.handled[event.TOPIC] += 1

    async def on_rollout_changed(self, event: ModelRolloutChanged) -> None:
        """A rollout started, moved or ended: the controller follows it."""
        await self._controller.on_rollout_changed(event)
        self.handled[event.TOPIC] += 1

    async def on_inspection_completed(self, event: InspectionCompleted) -> None:
        """One more inspection in the reference, or once it is full in the window; judge score
        drift and the defect rate. An inspection of a rollout also goes to the controller, last,
        so an event retried after a failure above is counted there once."""
        inspected = event.payload
        async with self._locks[inspected.model_name]:
            watch = await self._watch(inspected.model_name)
            if watch is None or watch.version != inspected.model_version:
                self._metrics.observed(INSPECTIONS, "not_production")
            else:
                observation = Observation(
                    event_id=str(event.event_id),
                    probability=inspected.defect_probability,
                    defect=inspected.verdict == "DEFECT",
                    threshold=inspected.threshold,
                    seen_at=self._now(),
                )
                await self._take(watch, observation)
                readings = (
                    score_drift(watch.scores, watch.reference, self._rules),
                    defect_rate(watch.scores, watch.reference, self._rules),
                )
                await self._judge(watch, readings, event)
        await self._controller.on_inspection(event)
        self.handled[event.TOPIC] += 1

    async def _take(self, watch: Watch, observation: Observation) -> None:
        """Keep an inspection in the reference while it fills, else in the window; a retry of
        its event after a failed announcement finds it in either already."""
        if observation.event_id in watch.reference or observation.event_id in watch.scores:
            return
        if not watch.reference.full:
            await self._store.add_reference(watch.model_name, watch.version, observation)
            watch.reference.add(observation)
            self._metrics.observed(INSPECTIONS, "counted")
            if watch.reference.full:
                self._compare_with_evaluation(watch)
            return
        await self._store.add_observation(watch.model_name, watch.version, observation)
        watch.scores.add(observation)
        self._metrics.observed(INSPECTIONS, "counted")
        await self._prune(watch, INSPECTIONS)

    async def on_inspection_reviewed(self, event: InspectionReviewed) -> None:
        """One more reviewed inspection; judge the rolling accuracy."""
        reviewed = event.payload
        async with self._locks[reviewed.model_name]:
            watch = await self._watch(reviewed.model_name)
            if watch is None or watch.version != reviewed.model_version:
                self._metrics.observed(REVIEWS, "not_production")
            else:
                earlier = watch.reviews.get(reviewed.inspection_id)
                if earlier is None or earlier.correct != reviewed.verdict_correct:
                    review = Review(reviewed.inspection_id, reviewed.verdict_correct, self._now())
                    await self._store.add_review(watch.model_name, watch.version, review)
                    watch.reviews.add(review)
                    self._metrics.observed(REVIEWS, "counted")
                    await self._prune(watch, REVIEWS)
                await self._judge(watch, (accuracy(watch.reviews, self._rules),), event)
        await self._controller.on_review(event)
        self.handled[event.TOPIC] += 1

    # --- production and the baseline -------------------------------------------------------

    async def _baseline(self, model_name: str, run_id: str) -> Baseline | None:
        """The run's test-split scores from its evaluation report; None when there is none.

        A version without a usable report is still followed (its accuracy is judged), so the
        problem is logged rather than the deployment refused.

        Raises:
            TransientError: MinIO did not answer (the bus retries).
        """
        evaluation_id = evaluation_id_of(model_name, run_id)
        key = evaluation_report_key(evaluation_id)
        try:
            report = EvaluationScores.model_validate_json(
                await self._objects.get_verified(Bucket.MODELS, key)
            )
        except NotFoundError:
            log.warning(
                "no evaluation report at %s/%s: %s runs without a baseline",
                Bucket.MODELS,
                key,
                run_id,
            )
            return None
        except ValidationError as invalid:
            log.error("the evaluation report %s/%s is unreadable: %s", Bucket.MODELS, key, invalid)
            return None
        if (report.model_name, report.run_id) != (model_name, run_id) or not report.images:
            log.error(
                "the evaluation report %s/%s is of %s run %s with %d scores, not of %s run %s",
                Bucket.MODELS,
                key,
                report.model_name,
                report.run_id,
                len(report.images),
                model_name,
                run_id,
            )
            return None
        return Baseline(
            evaluation_id=report.evaluation_id,
            run_id=report.run_id,
            dataset_id=report.dataset_id,
            dataset_version=report.dataset_version,
            probabilities=tuple(image.probability for image in report.images),
        )

    async def _move(self, event: Event[Any], model_name: str, version: int) -> None:
        """Production of ``model_name`` is ``version`` since ``event``, unless a later move is
        known; the model's windows and alarms start afresh."""
        production = Production(
            model_name, version, _millis(event.occurred_at), str(event.event_id), event.type
        )
        async with self._locks[model_name]:
            current = await self._store.get_production(model_name)
            if current is not None and current.since >= production.since:
                if current.event_id != production.event_id:
                    log.info(
                        "ignoring %s of %s version %d: a later move is known",
                        event.type,
                        model_name,
                        version,
                    )
                return
            # Forget first, then move: a crash in between redoes both, never leaves the old
            # version's window behind a recorded move.
            await self._store.reset(model_name)
            if await self._store.set_production(production):
                log.info("watching %s version %d (%s)", model_name, version, event.type)
            self._watches.pop(model_name, None)
            self._models.add(model_name)

    async def _watch(self, model_name: str) -> Watch | None:
        """The model's watch, rebuilt from the store the first time it is needed."""
        if model_name in self._watches:
            return self._watches[model_name]
        self._models.add(model_name)
        production = await self._store.get_production(model_name)
        if production is None:
            self._watches[model_name] = None
            return None
        rules, version = self._rules, production.version
        served = await self._store.get_version(model_name, version)
        watch = Watch(
            production=production,
            served=served,
            reference=ReferenceWindow(
                rules.reference_size,
                timedelta(seconds=rules.reference_min_s),
                rules.drift_bins,
                await self._store.reference(model_name, version),
            ),
            scores=ScoreWindow(
                rules.window_size,
                rules.drift_bins,
                await self._store.recent_observations(model_name, version, rules.window_size),
            ),
            reviews=ReviewWindow(
                rules.review_window_size,
                await self._store.recent_reviews(model_name, version, rules.review_window_size),
            ),
            fired=await self._store.fired(model_name, version),
        )
        if watch.reference.full:
            self._compare_with_evaluation(watch)
        self._watches[model_name] = watch
        log.info(
            "watching %s version %d: %d inspections in the reference (%s), %d inspections and %d "
            "reviews in the windows, %s",
            model_name,
            version,
            len(watch.reference),
            "full" if watch.reference.full else "filling",
            len(watch.scores),
            len(watch.reviews),
            f"fired: {', '.join(sorted(watch.fired))}" if watch.fired else "all alarms armed",
        )
        return watch

    def _compare_with_evaluation(self, watch: Watch) -> None:
        """The full reference beside the version's test split: the sanity check's figures, at
        the threshold the gateway last decided with."""
        latest = watch.reference.latest
        if latest is None:
            return
        threshold = latest.threshold
        figures = {"defect_rate": watch.reference.defect_rate(threshold)}
        baseline = watch.served.baseline if watch.served is not None else None
        if baseline is not None:
            scores = baseline.probabilities
            figures["evaluation_defect_rate"] = sum(p >= threshold for p in scores) / len(scores)
            figures["evaluation_psi"] = psi(
                histogram(scores, watch.reference.edges), watch.reference.counts
            )
        watch.figures = figures
        log.info(
            "the reference of %s version %d is full: %d inspections, %s",
            watch.model_name,
            watch.version,
            len(watch.reference),
            ", ".join(f"{name} {value:.4f}" for name, value in figures.items()),
        )

    async def _prune(self, watch: Watch, window: str) -> None:
        """Drop kept observations the window has moved past, once per window's worth of new
        ones (the store keeps what a restart needs, not the whole stream)."""
        watch.unpruned[window] += 1
        if window == INSPECTIONS and watch.unpruned[window] >= self._rules.window_size:
            oldest = watch.scores.oldest
            if oldest is not None:
                await self._store.prune_observations(
                    watch.model_name, watch.version, oldest.seen_at
                )
            watch.unpruned[window] = 0
        elif window == REVIEWS and watch.unpruned[window] >= self._rules.review_window_size:
            first = watch.reviews.oldest
            if first is not None:
                await self._store.prune_reviews(watch.model_name, watch.version, first.seen_at)
            watch.unpruned[window] = 0

    # --- alarms ----------------------------------------------------------------------------

    async def _judge(
        self, watch: Watch, readings: Iterable[Reading | None], cause: Event[Any]
    ) -> None:
        """Fire, hold or re-arm each signal's alarm; announce what fired (see
        :func:`screwops_monitor.signals.decide`)."""
        cause_id = str(cause.event_id)
        fired: list[Reading] = []
        for reading in readings:
            if reading is None:
                continue
            watch.readings[reading.signal] = reading
            action = decide(reading, fired_by=watch.fired.get(reading.signal), cause=cause_id)
            if action == "rearm":
                await self._store.rearm(watch.model_name, watch.version, reading.signal)
                watch.fired.pop(reading.signal, None)
                log.info(
                    "%s of %s version %d is back at %.4f: alarm re-armed",
                    reading.signal,
                    watch.model_name,
                    watch.version,
                    reading.value,
                )
            elif action == "fire":
                firing = Firing(
                    signal=reading.signal,
                    cause_event_id=cause_id,
                    value=reading.value,
                    threshold=reading.threshold,
                    window=reading.observations,
                    fired_at=self._now(),
                )
                if await self._store.claim_firing(watch.model_name, watch.version, firing):
                    watch.fired[reading.signal] = cause_id
                    fired.append(reading)
                else:  # another instance fired it: learn by what
                    watch.fired = await self._store.fired(watch.model_name, watch.version)
        for reading in fired:
            await self._announce(watch, reading, cause)
        if fired:
            await self._request_training(watch, fired, cause)
            await self._roll_back_if_new(watch, fired)

    def _watching(self, production: Production) -> bool:
        """Whether ``production`` is in its watch window: moved forward (a rollback's own move
        is not watched: rolling back from the version returned to would return to the version
        that just failed) less than ``watch_window_s`` ago."""
        window = timedelta(seconds=self._controller_rules.watch_window_s)
        return (
            production.moved_by == ModelDeployed.TOPIC
            and window > timedelta(0)
            and self._now() - production.since <= window
        )

    async def _roll_back_if_new(self, watch: Watch, fired: Sequence[Reading]) -> None:
        """Within the watch window, an alarm of the new version rolls it back."""
        production = watch.production
        window = timedelta(seconds=self._controller_rules.watch_window_s)
        if not self._watching(production):
            return
        breached = "; ".join(
            f"{r.signal} {r.value:.4f} past {r.threshold:.4f} over {r.observations} observations"
            for r in fired
        )
        await self._controller.roll_back(
            watch.model_name,
            watch.version,
            production.event_id,
            f"version {watch.version} breached its SLO within {window.total_seconds():g}s of "
            f"its deployment: {breached}",
        )

    async def _announce(self, watch: Watch, reading: Reading, cause: Event[Any]) -> None:
        log.warning(
            "%s of %s version %d is %.4f, past %.4f over %d observations",
            reading.signal,
            watch.model_name,
            watch.version,
            reading.value,
            reading.threshold,
            reading.observations,
        )
        await self._publish(
            ModelDegraded.caused_by(
                cause,
                ModelDegradedPayload(
                    model_name=watch.model_name,
                    model_version=watch.version,
                    signal=reading.signal,
                    value=reading.value,
                    threshold=reading.threshold,
                    window=reading.observations,
                ),
                producer=self._producer,
                discriminator=reading.signal,
            )
        )
        self._metrics.alarmed(watch.model_name, reading.signal)

    async def _request_training(
        self, watch: Watch, fired: Sequence[Reading], cause: Event[Any]
    ) -> None:
        """Ask for one new model for everything that fired, unless the cooldown holds.

        The request names the production model's dataset and no version, so the trainer takes
        the newest validated one: retraining on the very data production was trained on would
        give back the same run.
        """
        baseline = watch.served.baseline if watch.served is not None else None
        if baseline is None:
            log.error(
                "%s version %d degraded, but without a baseline its dataset is unknown: no "
                "training requested",
                watch.model_name,
                watch.version,
            )
            self._metrics.training_decided(watch.model_name, "no_dataset")
            return
        reason = "; ".join(
            f"{r.signal} {r.value:.4f} past {r.threshold:.4f} over {r.observations} observations"
            for r in fired
        )
        reason = f"{watch.model_name} version {watch.version}: {reason}"
        claim = TrainingClaim(watch.model_name, str(cause.event_id), self._now(), reason)
        if not await self._store.claim_training(claim, self._cooldown):
            last = await self._store.last_training(watch.model_name)
            log.info(
                "not asking to retrain %s again: last asked at %s, cooldown %s",
                watch.model_name,
                last.requested_at.isoformat() if last else "?",
                self._cooldown,
            )
            self._metrics.training_decided(watch.model_name, "cooldown")
            return
        await self._publish(
            TrainingRequested.caused_by(
                cause,
                TrainingRequestedPayload(
                    model_name=watch.model_name,
                    dataset_id=baseline.dataset_id,
                    dataset_version=None,
                    degraded_version=watch.version,
                    reason=reason,
                    requested_by=self._producer,
                ),
                producer=self._producer,
            )
        )
        log.warning("asked to retrain %s on %s: %s", watch.model_name, baseline.dataset_id, reason)
        self._metrics.training_decided(watch.model_name, "requested")

    # --- errors ----------------------------------------------------------------------------

    async def check_errors(self) -> None:
        """Judge the running canaries and the productions in their watch window on their error
        rates (one reading of :meth:`run_error_checks`).

        Raises:
            TransientError: the registry or the store did not answer (the next reading retries).
        """
        await self._controller.check_errors()
        for model_name in sorted(self._models):
            async with self._locks[model_name]:
                watch = await self._watch(model_name)
            if watch is not None and self._watching(watch.production):
                await self._controller.watch_errors(
                    model_name, watch.version, watch.production.since, watch.production.event_id
                )

    async def run_error_checks(self) -> None:
        """Every ``errors_interval_s``, :meth:`check_errors`, until cancelled; a reading that
        fails is logged and the next one tries again."""
        while True:
            await asyncio.sleep(self._controller_rules.errors_interval_s)
            try:
                await self.check_errors()
            except Exception:
                log.exception(
                    "the error-rate check failed; trying again in %gs",
                    self._controller_rules.errors_interval_s,
                )

    # --- gauges ----------------------------------------------------------------------------

    def _watched(self) -> list[Watch]:
        # Called from the metrics exporter's thread: take a snapshot of the dict first.
        return [watch for watch in list(self._watches.values()) if watch is not None]

    def _observe_values(self, options: CallbackOptions) -> Iterable[Measurement]:
        for watch in self._watched():
            for reading in list(watch.readings.values()):
                yield Measurement(reading.value, _labels(watch) | {"signal": reading.signal})

    def _observe_thresholds(self, options: CallbackOptions) -> Iterable[Measurement]:
        for watch in self._watched():
            for reading in list(watch.readings.values()):
                for bound, value in reading.bounds:
                    yield Measurement(
                        value, _labels(watch) | {"signal": reading.signal, "bound": bound}
                    )

    def _observe_fired(self, options: CallbackOptions) -> Iterable[Measurement]:
        for watch in self._watched():
            fired = dict(watch.fired)
            for signal in list(watch.readings):
                yield Measurement(int(signal in fired), _labels(watch) | {"signal": signal})

    def _observe_windows(self, options: CallbackOptions) -> Iterable[Measurement]:
        for watch in self._watched():
            yield Measurement(len(watch.reference), _labels(watch) | {"window": REFERENCE})
            yield Measurement(len(watch.scores), _labels(watch) | {"window": INSPECTIONS})
            yield Measurement(len(watch.reviews), _labels(watch) | {"window": REVIEWS})

    def _observe_reference(self, options: CallbackOptions) -> Iterable[Measurement]:
        for watch in self._watched():
            for figure, value in list(watch.figures.items()):
                yield Measurement(value, _labels(watch) | {"figure": figure})

    def _now(self) -> datetime:
        return _millis(self._clock())


def _labels(watch: Watch) -> dict[str, str]:
    return {"model": watch.model_name, "version": str(watch.version)}


def _millis(moment: datetime) -> datetime:
    """``moment`` at the millisecond precision MongoDB keeps, so a stored time reads back equal."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
