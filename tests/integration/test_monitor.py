"""The monitor on the real stack: the evaluation report in the real MinIO, deployments and
inspections on the real Kafka, its state (the reference window among it) in FerretDB (or MongoDB),
and its announcements read back from Kafka.

The service's pieces run in-process, wired as ``__main__`` wires them, except that its bus uses
this test's own topics (:class:`RoutedBus`) and database and the model name is unique, so nothing
here meets another test's events or documents.

The scores come from a real shift of the pictures, not from a chosen distribution: screws are
rendered by ``screwops_synth`` in its normal style and with its lighting drifted
(``Style.shifted``: 50% brighter, unevenly), fitted to a 256 px frame as the gateway fits them,
cut into the strip the served graph scores (the trainer's ``strips``: the screw found and laid
along it), and scored by a small classifier trained here on normal renders (gradient-boosted
trees on 64x16 thumbnails of the strip, about 0.65 accurate: it stands in for the CNN, which
would take minutes to train on this machine). Measured offline, the scores' PSI against the
reference is 0.03 for the normal set and 0.49 for the drifted one (0.17, under the alarm, at
30% brighter, the shift used when the classifier read the 128 px crop). Its scores on a
held-out normal set are the evaluation's; the line's first inspections, the reference the signals
are judged against, are another normal set; the evaluation's set streamed after them must raise
nothing, and the drifted set the alarm.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from motor.motor_asyncio import AsyncIOMotorDatabase
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from PIL import Image
from screwops_bus import RetryPolicy
from screwops_contracts import (
    Event,
    InspectionCompleted,
    InspectionCompletedPayload,
    ModelDegraded,
    Topic,
    TrainingRequested,
)
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import evaluation_id_of, evaluation_report_key
from screwops_imaging import fit_frame
from screwops_monitor import handlers
from screwops_monitor.config import Rules
from screwops_monitor.service import MonitorService
from screwops_monitor.store import (
    PRODUCTION,
    ROLLOUTS,
    TRAINING_REQUESTS,
    MongoMonitorStore,
    Production,
    RolloutRecord,
)
from screwops_settings import StackSettings, kafka_client_options
from screwops_storage import ObjectStore, database
from screwops_synth import DEFECT_TYPES, Style, render_screw
from sklearn.ensemble import HistGradientBoostingClassifier

from tests.integration.routing import RoutedBus, RoutedReader, routed_topics
from tests.support import eventually, minio_client, model_deployed, remove_objects, unique
from tests.unit.monitor.builders import evaluator_report, rollout_changed

SHIFT = 0.5
FRAME_SIZE = 256
IMAGES = 150
RULES = Rules(reference_size=IMAGES, window_size=IMAGES, min_observations=100, cooldown_s=3600)
ANNOUNCED: dict[str, type[Event[Any]]] = {
    Topic.MODEL_DEGRADED: ModelDegraded,
    Topic.TRAINING_REQUESTED: TrainingRequested,
}

Features = npt.NDArray[np.float32]


# --- the scores ----------------------------------------------------------------------------------


def thumbnails(seed: int, count: int, style: Style | None = None) -> tuple[Features, list[bool]]:
    """``count`` rendered screws, every other one defective, as the classifier's features.

    TensorFlow (the trainer's alignment) is imported here, so collecting the suite stays fast.
    """
    from screwops_trainer.frames import geometry, strips
    from screwops_trainer.model import TrainingParams, configure_tensorflow

    configure_tensorflow(intra_op_threads=2, inter_op_threads=1)
    frames, defective = [], []
    for i in range(count):
        bad = i % 2 == 1
        defect = DEFECT_TYPES[(i // 2) % len(DEFECT_TYPES)] if bad else None
        picture = render_screw(
            np.random.default_rng([seed, i]), size=256, defect=defect, style=style
        )
        frames.append(fit_frame(picture, FRAME_SIZE))
        defective.append(bad)
    shape = geometry(FRAME_SIZE, most_pixels_along=TrainingParams().strip_pixels)
    cut, _ = strips(np.stack(frames), shape)
    features = [
        np.asarray(
            Image.fromarray((strip[:, :, 0] * 255).astype(np.uint8)).resize(
                (64, 16), Image.Resampling.BOX
            ),
            dtype=np.float32,
        ).ravel()
        / 255
        for strip in cut
    ]
    return np.stack(features), defective


@dataclass(frozen=True)
class Scores:
    baseline: list[float]
    normal: list[float]
    shifted: list[float]


@pytest.fixture(scope="module")
def scores() -> Scores:
    features, defective = thumbnails(1, 300)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(features, defective)

    def score(seed: int, style: Style | None = None) -> list[float]:
        return [float(p) for p in model.predict_proba(thumbnails(seed, IMAGES, style)[0])[:, 1]]

    return Scores(baseline=score(2), normal=score(3), shifted=score(4, Style().shifted(SHIFT)))


# --- the running monitor -------------------------------------------------------------------------


@dataclass
class Monitor:
    """The running service, the model it watches, and how to drive and read it."""

    settings: StackSettings
    routes: dict[str, str]
    db: AsyncIOMotorDatabase[Any]
    objects: ObjectStore
    model: str
    group: str
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    runs: list[str] = field(default_factory=list)
    bus: RoutedBus | None = None
    service: MonitorService | None = None

    async def start(self) -> MonitorService:
        """Start the monitor as ``__main__`` wires it; again after :meth:`stop`, a restart (the
        same consumer group and database, a fresh process's memory)."""
        self.bus = RoutedBus(
            self.settings,
            service=self.group,
            db=self.db,
            retry=RetryPolicy(max_attempts=3, initial_wait=0.05, max_wait=0.1),
            routes=self.routes,
        )
        store = MongoMonitorStore(self.db)
        await store.ensure_indexes()
        self.reader = InMemoryMetricReader()
        self.service = MonitorService(
            store,
            self.objects,
            self.bus.publish,
            rules=RULES,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
        )
        handlers.register(self.bus, self.service)
        await self.bus.broker.start()
        return self.service

    async def stop(self) -> None:
        if self.bus is not None:
            await self.bus.broker.stop()

    async def deploy(self, version: int, baseline: list[float]) -> None:
        """The evaluator's report of the version's run in MinIO, then the registry's event."""
        assert self.bus is not None
        run_id = unique(f"run-{version}")
        self.runs.append(run_id)
        key = evaluation_report_key(evaluation_id_of(self.model, run_id))
        report = evaluator_report(self.model, run_id, baseline, dataset_id=f"{self.model}-data")
        await self.objects.put_named(Bucket.MODELS, key, report, content_type="application/json")
        await self.bus.publish(model_deployed(self.model, version, run_id=run_id))

    async def inspect(self, version: int, probabilities: Iterable[float]) -> list[str]:
        """What the gateway announces for each answered inspection; their event ids."""
        assert self.bus is not None
        sent = []
        for i, probability in enumerate(probabilities):
            event = InspectionCompleted.origin(
                InspectionCompletedPayload(
                    request_id=f"req-{i}",
                    line_id=f"line-{i % 3}",
                    camera_id="cam-1",
                    verdict="DEFECT" if probability >= 0.5 else "GOOD",
                    defect_probability=probability,
                    threshold=0.5,
                    model_name=self.model,
                    model_version=version,
                    trace_id="0" * 32,
                    latency_ms=4.0,
                ),
                producer="gateway",
            )
            await self.bus.publish(event)
            sent.append(str(event.event_id))
        return sent

    async def handled(self, topic: str, count: int) -> None:
        """Wait until the monitor has handled ``count`` events of ``topic`` to the end: then
        everything it announced for them has been acknowledged by Kafka."""
        service = self.service
        assert service is not None

        async def done() -> bool | None:
            return True if service.handled[topic] >= count else None

        await eventually(done, within=120, what=f"{count} {topic} handled")
        assert service.handled[topic] == count

    async def announced(self) -> list[Event[Any]]:
        """Everything the monitor has put on its two topics, read to their ends."""
        names = {self.routes[topic]: topic for topic in ANNOUNCED}
        probe = AIOKafkaConsumer(**kafka_client_options(self.settings.kafka))
        await probe.start()
        try:
            ends = await probe.end_offsets([TopicPartition(name, 0) for name in names])
        finally:
            await probe.stop()
        expected = sum(ends.values())
        reader = RoutedReader(self.settings, self.routes, ANNOUNCED)
        await reader.start()
        events: list[Event[Any]] = []
        try:

            async def all_read() -> list[Event[Any]] | None:
                events.extend(await reader.read())
                return events if len(events) >= expected else None

            return await eventually(all_read, within=30, what=f"{expected} announcements")
        finally:
            await reader.stop()

    async def reference(self, version: int, probabilities: list[float]) -> None:
        """The line's first inspections of a newly deployed version: its reference, full."""
        await self.inspect(version, probabilities)
        await self.handled(Topic.INSPECTION_COMPLETED, len(probabilities))
        assert (
            self.gauges("screwops_monitor_window", by="window")["reference"] == RULES.reference_size
        )

    def gauges(self, name: str, by: str = "signal") -> dict[str, float]:
        """The current value of gauge ``name`` of this model, by label ``by``."""
        found: dict[str, float] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        if attributes.get("model") == self.model:
                            found[str(attributes[by])] = float(getattr(point, "value", 0.0))
        return found


@pytest.fixture
async def routes(settings: StackSettings) -> AsyncIterator[dict[str, str]]:
    """A fresh topic (and dead-letter twin) for each topic the monitor consumes or produces."""
    used = (
        Topic.MODEL_DEPLOYED,
        Topic.MODEL_ROLLED_BACK,
        Topic.MODEL_ROLLOUT_CHANGED,
        Topic.INSPECTION_COMPLETED,
        Topic.INSPECTION_REVIEWED,
        *ANNOUNCED,
    )
    async for routes in routed_topics(settings, used, "it-monitor"):
        yield routes


@pytest.fixture
async def monitor(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any], routes: dict[str, str]
) -> AsyncIterator[Monitor]:
    db = database(settings.mongo, mongo_db.name, appname="it-monitor")
    objects = ObjectStore.from_settings(settings.minio)
    await objects.ensure_buckets(Bucket.MODELS)
    model = unique("it-monitor-model")
    running = Monitor(settings, routes, db, objects, model, unique("monitor"))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
        keys = [evaluation_report_key(evaluation_id_of(model, run)) for run in running.runs]
        await asyncio.to_thread(remove_objects, minio_client(settings.minio), Bucket.MODELS, *keys)
        db.client.close()


# --- the tests -----------------------------------------------------------------------------------


async def test_a_stream_like_the_reference_raises_nothing(monitor: Monitor, scores: Scores) -> None:
    await monitor.deploy(1, scores.baseline)
    await monitor.handled(Topic.MODEL_DEPLOYED, 1)
    await monitor.reference(1, scores.normal)
    await monitor.inspect(1, scores.baseline)

    await monitor.handled(Topic.INSPECTION_COMPLETED, 2 * IMAGES)
    assert await monitor.announced() == []
    values = monitor.gauges("screwops_monitor_signal")
    thresholds = monitor.gauges("screwops_monitor_signal_threshold")
    figures = monitor.gauges("screwops_monitor_reference", by="figure")
    print(
        f"normal light: PSI {values['score_drift']:.3f} (alarm above "
        f"{thresholds['score_drift']:.3f}), defect rate {values['defect_rate']:.3f}; reference: "
        f"defect rate {figures['defect_rate']:.3f}, the test split's "
        f"{figures['evaluation_defect_rate']:.3f}, PSI between them {figures['evaluation_psi']:.3f}"
    )
    assert values["score_drift"] < thresholds["score_drift"]
    assert set(figures) == {"defect_rate", "evaluation_defect_rate", "evaluation_psi"}


async def test_drifted_light_raises_the_alarm_once_and_asks_for_training_once(
    monitor: Monitor, scores: Scores
) -> None:
    await monitor.deploy(1, scores.baseline)
    await monitor.handled(Topic.MODEL_DEPLOYED, 1)
    await monitor.reference(1, scores.normal)
    sent = await monitor.inspect(1, scores.shifted)
    await monitor.handled(Topic.INSPECTION_COMPLETED, 2 * IMAGES)

    announced = await monitor.announced()
    degraded = [e for e in announced if isinstance(e, ModelDegraded)]
    [request] = [e for e in announced if isinstance(e, TrainingRequested)]
    signals = [e.payload.signal for e in degraded]
    print(
        "drifted light: "
        + ", ".join(
            f"{e.payload.signal} {e.payload.value:.3f} past {e.payload.threshold:.3f}"
            for e in degraded
        )
    )
    assert "score_drift" in signals
    assert len(signals) == len(set(signals)), "each signal fires once (hysteresis)"
    assert all(e.payload.model_version == 1 for e in degraded)
    assert str(request.causation_id) in sent
    payload = request.payload
    assert (payload.model_name, payload.dataset_id, payload.dataset_version) == (
        monitor.model,
        f"{monitor.model}-data",
        None,
    )
    assert payload.requested_by == "monitor"

    # Killed and started again: the fired alarm, the reference and the window come back from
    # the database.
    await monitor.stop()
    service = await monitor.start()
    await monitor.inspect(1, scores.shifted[:20])
    await monitor.handled(Topic.INSPECTION_COMPLETED, 20)
    assert len(await monitor.announced()) == len(announced), "still fired: nothing new"
    windows = monitor.gauges("screwops_monitor_window", by="window")
    assert windows == {"reference": IMAGES, "inspections": IMAGES, "reviews": 0}, "rebuilt, full"

    # A new version: a new reference, armed again, fires again; the cooldown (in the database)
    # holds training.
    await monitor.deploy(2, scores.baseline)
    await monitor.handled(Topic.MODEL_DEPLOYED, 1)
    await monitor.inspect(2, scores.normal)
    await monitor.handled(Topic.INSPECTION_COMPLETED, 20 + IMAGES)
    await monitor.inspect(2, scores.shifted)
    await monitor.handled(Topic.INSPECTION_COMPLETED, 20 + 2 * IMAGES)
    assert service.handled[Topic.INSPECTION_COMPLETED] == 20 + 2 * IMAGES

    before = {e.event_id for e in announced}
    later = [e for e in await monitor.announced() if e.event_id not in before]
    assert {type(e) for e in later} == {ModelDegraded}, later
    assert {e.payload.model_version for e in later} == {2}
    assert "score_drift" in {e.payload.signal for e in later}
    claim = await monitor.db[TRAINING_REQUESTS].find_one({"_id": monitor.model})
    assert claim is not None
    assert claim["cause_event_id"] == str(request.causation_id)


async def test_the_store_keeps_the_newest_rollout_change_and_how_production_moved(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]
) -> None:
    db = database(settings.mongo, mongo_db.name, appname="it-monitor")
    store = MongoMonitorStore(db)
    model = unique("it-monitor-rollout")
    at = datetime(2026, 3, 1, 8, 0, 0, 123000, tzinfo=UTC)

    def record(sequence: int, step: int) -> RolloutRecord:
        change = rollout_changed(model, "advanced", step=step, sequence=sequence, at=at)
        return RolloutRecord(change.payload, at + timedelta(seconds=sequence))

    try:
        assert await store.get_rollout(model) is None
        assert await store.save_rollout(record(3, 1))
        assert not await store.save_rollout(record(2, 0)), "older: kept out"
        assert not await store.save_rollout(record(3, 1)), "the same: kept out"
        assert await store.get_rollout(model) == record(3, 1)
        assert await store.save_rollout(record(4, 2))
        assert await store.get_rollout(model) == record(4, 2)

        moved = Production(model, 2, at, "e1", "model.deployed")
        assert await store.set_production(moved)
        assert await store.get_production(model) == moved
        await db[PRODUCTION].update_one({"_id": model}, {"$unset": {"moved_by": ""}})
        before = await store.get_production(model)
        assert before is not None
        assert before.moved_by == "", "a record from before is not watched"
    finally:
        await db[ROLLOUTS].delete_many({"_id": model})
        await db[PRODUCTION].delete_many({"_id": model})
        db.client.close()
