"""The bus on the real broker: tracing across a hop, dead letters that do not block the
partition, and a consumer killed after its effects that gets its event again, effect once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from screwops_bus import Bus, DeadLetter, RetryPolicy
from screwops_bus.idempotency import collection_name
from screwops_contracts import DatasetIngested, DatasetLabeled, dlq_topic
from screwops_settings import StackSettings

from tests.support import dataset_ingested, eventually, records_of, unique

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def bus(settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]) -> AsyncIterator[Bus]:
    bus = Bus(
        settings,
        service=unique("it-bus"),
        db=mongo_db,
        retry=RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02),
    )
    yield bus
    await bus.broker.stop()


async def test_a_poison_message_is_dead_lettered_and_the_partition_keeps_flowing(
    settings: StackSettings, bus: Bus, event_topic: str
) -> None:
    handled: list[DatasetIngested] = []

    @bus.consumer(DatasetIngested, topic=event_topic)
    async def on_dataset_ingested(event: DatasetIngested) -> None:
        handled.append(event)

    await bus.broker.start()
    before, after = dataset_ingested("before"), dataset_ingested("after")
    await bus.publish(before, topic=event_topic)
    await bus.broker.publish(b"\x89PNG not json", topic=event_topic, headers={"source": "it"})
    await bus.publish(after, topic=event_topic)

    async def both() -> list[DatasetIngested] | None:
        return handled if len(handled) == 2 else None

    assert await eventually(both, within=30, what="both valid events") == [before, after]
    [letter] = await records_of(settings, dlq_topic(event_topic), 1, within=30)
    headers = {k: v.decode() for k, v in letter.headers}
    assert letter.value == b"\x89PNG not json"
    assert headers["source"] == "it"
    dead = DeadLetter.from_headers(headers)
    assert dead.reason.startswith("malformed event")
    assert (dead.topic, dead.partition, dead.offset) == (event_topic, 0, 1)


async def test_the_consumer_span_is_a_child_of_the_producer_span(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any], event_topic: str
) -> None:
    service = unique("it-trace")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=settings.telemetry.otlp_grpc_endpoint, insecure=True)
        )
    )
    bus = Bus(settings, service=service, db=mongo_db, tracer_provider=provider)
    handled: list[DatasetIngested] = []

    @bus.consumer(DatasetIngested, topic=event_topic)
    async def on_dataset_ingested(event: DatasetIngested) -> None:
        handled.append(event)

    await bus.broker.start()
    try:
        await bus.publish(dataset_ingested("screws"), topic=event_topic)

        async def done() -> list[DatasetIngested] | None:
            return handled or None

        await eventually(done, within=30, what="the event to be handled")
    finally:
        await bus.broker.stop()
        provider.shutdown()

    async def spans() -> dict[str, dict[str, Any]] | None:
        async with httpx.AsyncClient(base_url=settings.telemetry.jaeger_query_url) as http:
            response = await http.get("/api/traces", params={"service": service})
        traces = response.json().get("data") or []
        by_name = {s["operationName"]: s for t in traces for s in t["spans"]}
        wanted = {f"{event_topic} {action}" for action in ("create", "publish", "process")}
        return by_name if wanted <= by_name.keys() else None

    found = await eventually(spans, within=30, what="producer and consumer spans in Jaeger")
    # FastStream's producer side is a "create" span (the message's context, sent in the
    # traceparent header) with the "publish" call under it; the consumer continues from it.
    create, publish = found[f"{event_topic} create"], found[f"{event_topic} publish"]
    process = found[f"{event_topic} process"]

    def parent(span: dict[str, Any]) -> str:
        [ref] = [r for r in span["references"] if r["refType"] == "CHILD_OF"]
        assert ref["traceID"] == create["traceID"]
        return str(ref["spanID"])

    def kind(span: dict[str, Any]) -> str:
        return next(str(t["value"]) for t in span["tags"] if t["key"] == "span.kind")

    assert (kind(create), kind(publish), kind(process)) == ("producer", "producer", "consumer")
    assert parent(process) == create["spanID"]
    assert parent(publish) == create["spanID"]


async def test_a_consumer_killed_after_its_effect_gets_the_event_again_and_the_effect_is_once(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any], event_topic: str, kafka_topic: str
) -> None:
    group = unique("crash")
    args = [event_topic, kafka_topic, group, mongo_db.name]
    event = dataset_ingested("screws")
    publisher = Bus(settings, service="it", db=mongo_db)
    await publisher.broker.start()
    await publisher.publish(event, topic=event_topic)
    await publisher.broker.stop()

    def worker(*extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.bus_worker", *args, *extra],
            cwd=REPO,
            env=os.environ | {"PYTHONPATH": str(REPO)},
        )

    async def deliveries(n: int) -> int | None:
        doc = await mongo_db.effects.find_one({"_id": str(event.event_id)})
        return n if doc and doc["deliveries"] == n else None

    hanging = worker("--hang")
    try:
        await eventually(lambda: deliveries(1), within=60, what="the first delivery's effect")
        # Killed only once its publish is on Kafka too: the effect alone lands before the publish.
        await records_of(settings, kafka_topic, 1, within=60)
    finally:
        hanging.send_signal(signal.SIGKILL)
        hanging.wait(timeout=10)

    restarted = worker()
    try:
        await eventually(lambda: deliveries(2), within=60, what="the event to be redelivered")

        async def recorded() -> bool | None:
            found = await mongo_db[collection_name(group)].find_one({"_id": str(event.event_id)})
            return True if found else None

        await eventually(recorded, within=30, what="the processed-events record")
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=60) == 0

    assert await mongo_db.effects.count_documents({}) == 1
    # The publish ran twice (at least once), as the same event: downstream dedups it.
    first, second = [
        DatasetLabeled.model_validate_json(r.value)
        for r in await records_of(settings, kafka_topic, 2, within=30)
    ]
    assert first.event_id == second.event_id
    assert first.causation_id == event.event_id


async def test_sigterm_lets_the_handler_in_flight_finish_and_commit(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any], event_topic: str, kafka_topic: str
) -> None:
    group = unique("graceful")
    args = [event_topic, kafka_topic, group, mongo_db.name]
    event = dataset_ingested("screws")
    publisher = Bus(settings, service="it", db=mongo_db)
    await publisher.broker.start()
    await publisher.publish(event, topic=event_topic)
    await publisher.broker.stop()

    def worker(*extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.bus_worker", *args, *extra],
            cwd=REPO,
            env=os.environ | {"PYTHONPATH": str(REPO)},
        )

    async def effect() -> bool | None:
        return True if await mongo_db.effects.find_one({"_id": str(event.event_id)}) else None

    slow = worker("--slow", "3")
    await eventually(effect, within=60, what="the handler to start its work")
    slow.send_signal(signal.SIGTERM)
    assert slow.wait(timeout=60) == 0
    assert await mongo_db[collection_name(group)].find_one({"_id": str(event.event_id)})

    # Committed: a new member of the group does not get the event again.
    again = worker()
    try:
        marker = dataset_ingested("marker")
        publisher = Bus(settings, service="it", db=mongo_db)
        await publisher.broker.start()
        await publisher.publish(marker, topic=event_topic)
        await publisher.broker.stop()

        async def marker_done() -> bool | None:
            done = await mongo_db.effects.find_one({"_id": str(marker.event_id)})
            return True if done else None

        await eventually(marker_done, within=60, what="the next event after a graceful stop")
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=60) == 0
    doc = await mongo_db.effects.find_one({"_id": str(event.event_id)})
    assert doc is not None
    assert doc["deliveries"] == 1
