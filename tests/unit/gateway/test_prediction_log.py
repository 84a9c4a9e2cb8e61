"""The prediction log: which images are kept, and that whatever is dropped is counted."""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from screwops_contracts import InspectionCompleted, InspectionCompletedPayload
from screwops_contracts.datasets import Bucket
from screwops_gateway.config import LogPolicy
from screwops_gateway.prediction_log import IMAGE_PREFIX, PredictionLog
from screwops_storage import content_key, sha256_hex

from tests.fakes import RecordingBus
from tests.support import eventually
from tests.unit.gateway.fakes import MODEL, CountingMetrics, FakeObjects, png


def completed(probability: float) -> InspectionCompleted:
    return InspectionCompleted.origin(
        InspectionCompletedPayload(
            request_id="r",
            line_id="line-1",
            camera_id="cam-a",
            verdict="DEFECT" if probability >= 0.5 else "GOOD",
            defect_probability=probability,
            threshold=0.5,
            model_name=MODEL,
            model_version=1,
            trace_id="",
            latency_ms=3.0,
        ),
        producer="gateway",
    )


class Rig:
    def __init__(self, policy: LogPolicy) -> None:
        self.published = RecordingBus("gateway")
        self.objects = FakeObjects()
        self.metrics = CountingMetrics()
        self.log = PredictionLog(self.published.publish, self.objects, self.metrics, policy)


async def test_an_uncertain_verdict_keeps_its_image_and_a_confident_one_does_not() -> None:
    rig = Rig(LogPolicy(image_sample_rate=0, low_confidence_band=0.15))
    image = png(48)
    rig.log.start()

    rig.log.record(completed(0.40), image)
    rig.log.record(completed(0.95), png(40))
    await rig.log.stop()

    uncertain, confident = rig.published
    key = content_key(IMAGE_PREFIX, sha256_hex(image))
    assert uncertain.payload.image_key == key
    assert rig.objects.objects == {(Bucket.INSPECTIONS, key): image}
    assert confident.payload.image_key is None


async def test_a_sampled_share_keeps_its_image_however_confident() -> None:
    rig = Rig(LogPolicy(image_sample_rate=1.0, low_confidence_band=0))
    rig.log.start()

    for shade in range(10):
        rig.log.record(completed(0.01), png(40, shade=shade))
    await rig.log.stop()

    assert all(e.payload.image_key for e in rig.published)
    assert len(rig.objects.objects) == 10


async def test_sampling_follows_the_inspection_id_so_the_share_holds() -> None:
    policy = LogPolicy(image_sample_rate=0.05, low_confidence_band=0)

    kept = sum(policy.keeps_image(completed(0.01)) for _ in range(20_000))

    assert 800 < kept < 1200


async def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    rig = Rig(LogPolicy(queue_size=3, concurrency=1, image_sample_rate=0))
    rig.published.gate = asyncio.Event()  # Kafka stalls
    rig.log.start()
    rig.log.record(completed(0.9), b"")

    async def worker_stalled() -> bool | None:
        return rig.log.pending == 0 or None  # the worker took the event, and waits on Kafka

    await eventually(worker_stalled, within=5, what="the worker to take the event", interval=0.001)
    for _ in range(9):
        rig.log.record(completed(0.9), b"")
    rig.published.gate.set()
    await rig.log.stop()

    assert len(rig.published) + rig.metrics.dropped["queue_full"] == 10
    assert rig.metrics.dropped["queue_full"] == 6  # one in flight, three queued


async def test_images_over_the_byte_budget_are_dropped_and_their_events_still_go_out() -> None:
    rig = Rig(LogPolicy(queue_bytes=150, image_sample_rate=1.0))
    image = bytes(100)

    rig.log.record(completed(0.9), image)
    rig.log.record(completed(0.9), image)
    rig.log.start()
    await rig.log.stop()

    assert [e.payload.image_key is None for e in rig.published] == [False, True]
    assert rig.metrics.images_dropped == {"queue_bytes": 1}


async def test_a_minio_outage_loses_the_image_but_not_the_event() -> None:
    rig = Rig(LogPolicy(image_sample_rate=1.0))
    rig.objects.fail = True
    rig.log.start()

    rig.log.record(completed(0.5), png(40))
    await rig.log.stop()

    [event] = rig.published
    assert event.payload.image_key is None
    assert rig.metrics.images_dropped == {"store_failed": 1}


async def test_a_kafka_outage_is_counted() -> None:
    rig = Rig(LogPolicy(image_sample_rate=0))
    rig.published.down = True
    rig.log.start()

    rig.log.record(completed(0.9), b"")
    rig.log.record(completed(0.9), b"")
    await rig.log.stop()

    assert rig.metrics.dropped == {"publish_failed": 2}


async def test_what_cannot_be_published_by_shutdown_is_counted() -> None:
    rig = Rig(LogPolicy(concurrency=1, image_sample_rate=0))
    rig.published.gate = asyncio.Event()  # Kafka never answers
    rig.log.start()

    for _ in range(4):
        rig.log.record(completed(0.9), b"")
    await rig.log.stop(timeout_s=0.05)

    assert rig.published == []
    assert rig.metrics.dropped == {"shutdown": 3}  # the fourth was in flight when cancelled


async def test_the_publish_runs_in_the_inspections_trace() -> None:
    tracer = TracerProvider().get_tracer("test")
    seen: list[int] = []

    async def publish(event: InspectionCompleted) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)

    log = PredictionLog(publish, FakeObjects(), CountingMetrics(), LogPolicy(image_sample_rate=0))
    log.start()
    with tracer.start_as_current_span("inspect") as span:
        log.record(completed(0.9), b"")
    await log.stop()

    assert seen == [span.get_span_context().trace_id]


async def test_the_inspections_bucket_expires_images_after_the_retention() -> None:
    rig = Rig(LogPolicy(image_retention_days=7))

    await rig.log.prepare()

    assert Bucket.INSPECTIONS in rig.objects.buckets
    assert rig.objects.retention_days == {Bucket.INSPECTIONS: 7}
