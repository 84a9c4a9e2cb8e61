"""A finished pipeline run for the end-to-end tests that look at what a run leaves behind (its
trace in Jaeger, its series in Prometheus) rather than at the run itself.

:func:`finished_run` reuses the run another test of this session already carried to
``model.deployed`` (test_pipeline.py's, which runs first), and only when there is none (the file
run on its own, or that test failed) makes one of its own, the same way. Either way the run is
found by what the registry put on ``model.deployed``: the event, and the W3C ``traceparent``
header the bus's tracing middleware wrote beside it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_contracts import ModelDeployed, Topic, parse_event
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings, kafka_client_options
from screwops_synth import generate

from tests.e2e.conftest import screwops
from tests.support import eventually, unique

GATEWAY = "127.0.0.1:50051"
# The pipeline's hops in order: (producer, topic, consumer), ingestion's Upload to model.deployed.
HOPS = (
    ("ingestion", Topic.DATASET_INGESTED, "labeling"),
    ("labeling", Topic.DATASET_LABELED, "validation"),
    ("validation", Topic.DATASET_VALIDATED, "trainer"),
    ("trainer", Topic.MODEL_TRAINED, "evaluator"),
    ("evaluator", Topic.MODEL_APPROVED, "registry"),
    ("registry", Topic.MODEL_DEPLOYED, "gateway"),
)
OUTCOMES = (Topic.DATASET_REJECTED, Topic.MODEL_REJECTED, Topic.MODEL_DEPLOYED)

# Collected before any test runs: a run deployed after this belongs to this session.
SESSION_STARTED_MS = int(time.time() * 1000)


@dataclass(frozen=True)
class FinishedRun:
    """A pipeline run that reached ``model.deployed``."""

    correlation_id: str
    deployed: ModelDeployed
    trace_id: str
    """The trace the run's events carried (32 hex digits)."""
    span_id: str
    """The span that published ``model.deployed`` (16 hex digits), the last hop's producer."""
    deployed_at_ms: int
    """The Kafka timestamp of ``model.deployed``."""


_found: FinishedRun | None = None


def _traceparent(record: ConsumerRecord[bytes, bytes]) -> tuple[str, str]:
    headers = {key: value.decode() for key, value in record.headers}
    version, trace_id, span_id, _flags = headers["traceparent"].split("-")
    assert version == "00", headers["traceparent"]
    return trace_id, span_id


async def _newest_in_session(settings: StackSettings) -> FinishedRun | None:
    """The newest run of this session that reached ``model.deployed``, if any: reads the topic
    from the beginning to its end as it is now."""
    consumer = AIOKafkaConsumer(
        Topic.MODEL_DEPLOYED,
        **kafka_client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:

        async def assigned() -> list[TopicPartition] | None:
            return list(consumer.assignment()) or None

        ends = await consumer.end_offsets(
            await eventually(assigned, within=30, what="model.deployed's partitions")
        )
        newest: FinishedRun | None = None

        async def to_the_end() -> bool | None:
            nonlocal newest
            batch = await consumer.getmany(timeout_ms=500)
            for record in (r for records in batch.values() for r in records):
                found = _finished(record, None)
                since = newest.deployed_at_ms if newest else SESSION_STARTED_MS
                if found is not None and found.deployed_at_ms >= since:
                    newest = found
            done = [await consumer.position(tp) >= end for tp, end in ends.items()]
            return True if all(done) else None

        await eventually(to_the_end, within=60, what="model.deployed read to its end")
        return newest
    finally:
        await consumer.stop()


async def _wait_for(settings: StackSettings, correlation_id: str, *, within: float) -> FinishedRun:
    """The run ``correlation_id`` once it is deployed; its rejection fails at once."""
    consumer = AIOKafkaConsumer(
        *OUTCOMES,
        **kafka_client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:

        async def deployed() -> FinishedRun | None:
            batch = await consumer.getmany(timeout_ms=500)
            for record in (r for records in batch.values() for r in records):
                found = _finished(record, correlation_id)
                if found is not None:
                    return found
            return None

        return await eventually(deployed, within=within, what=f"model.deployed of {correlation_id}")
    finally:
        await consumer.stop()


def _finished(
    record: ConsumerRecord[bytes, bytes], correlation_id: str | None
) -> FinishedRun | None:
    """The run ``record`` finishes (of ``correlation_id``, when named), if it is a deployment
    caused by a run rather than an operator's promotion or rollback."""
    event = parse_event(record.topic, record.value)
    if event is None:
        return None
    if correlation_id is not None and event.correlation_id != correlation_id:
        return None
    if record.topic != Topic.MODEL_DEPLOYED:
        raise AssertionError(f"the run ended in {event}")
    assert isinstance(event, ModelDeployed)
    if event.causation_id is None:
        return None
    trace_id, span_id = _traceparent(record)
    return FinishedRun(event.correlation_id, event, trace_id, span_id, record.timestamp)


async def finished_run(settings: StackSettings, tmp_path: Path) -> FinishedRun:
    """A run of this session that reached ``model.deployed``: another test's, or a new one
    (rendered screws imported through the CLI, as test_pipeline.py does; minutes)."""
    global _found
    if _found is None:
        _found = await _newest_in_session(settings)
    if _found is None:
        _found = await new_run(settings, tmp_path)
    return _found


async def new_run(settings: StackSettings, tmp_path: Path) -> FinishedRun:
    """A run of new rendered screws, imported through the CLI as test_pipeline.py does, once it
    is deployed (minutes)."""
    dataset = unique("e2e-run")
    root = tmp_path / dataset
    # Screws never rendered before: the same images would reuse the run trained on them
    # earlier, whose version is production already, and no model.deployed would come.
    generate(root, good=100, defect=100, seed=secrets.randbelow(1 << 30), size=256)
    screwops("ingest", str(root), "--dataset", dataset)
    correlation_id = screwops("datasets", "show", dataset)["correlation_id"]
    return await _wait_for(settings, correlation_id, within=900)


async def inspect(image: bytes, *, version: int | None, line_id: str = "line-e2e") -> Any:
    """One inspection through the gateway with ``version`` pinned (None: production answers,
    as a line's does); the InspectResponse."""
    async with open_aio_channel(GATEWAY) as channel:
        gateway: Any = inspection_pb2_grpc.InspectionServiceStub(channel)
        return await gateway.Inspect(
            inspection_pb2.InspectRequest(
                image=image,
                line_id=line_id,
                camera_id="cam-1",
                request_id=unique("e2e-inspect"),
                model_version=version,
            ),
            timeout=30,
        )
