"""Malformed events on every topic a service consumes: each consuming service sends them to the
topic's dead-letter twin with the reason, commits past them (the partition is not blocked), and
goes on handling the valid events that follow."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_bus.deadletter import CONSUMER, REASON
from screwops_contracts import CATALOGUE, dlq_topic
from screwops_contracts.minio import BUCKET_EVENTS_TOPIC
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings, kafka_client_options

from tests.e2e.runs import GATEWAY, finished_run
from tests.support import eventually, screw_png

# Every consumed topic and the services (consumer groups) that consume it.
CONSUMED: dict[str, tuple[str, ...]] = {
    **{str(r.event.TOPIC): r.consumers for r in CATALOGUE},
    str(BUCKET_EVENTS_TOPIC): ("ingestion",),
}
INSPECTIONS_AFTER = 5
DRAIN_S = 600.0
LINE = "line-chaos"


def poison(topic: str) -> list[bytes]:
    """Bytes that are not JSON, and JSON that is not the topic's event; each unique, to be found
    again in the dead-letter topic."""
    marker = uuid.uuid4().hex
    return [
        b"\x00\xffnot an event " + marker.encode(),
        json.dumps({"event_id": marker, "type": topic, "payload": {"nonsense": True}}).encode(),
    ]


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(1800)  # a run of its own when no other test made one, then the drain
async def test_poison_on_every_topic_is_dead_lettered_and_valid_events_still_flow(
    tmp_path: Any,
) -> None:
    settings = StackSettings()
    # A deployed model for the valid inspections. They ask for production, not this run's version:
    # runs of later tests may have replaced it and the registry evicted it from Triton.
    await finished_run(settings, tmp_path)
    sent: dict[bytes, tuple[str, int, int]] = {}  # body -> (topic, partition, offset)
    producer = AIOKafkaProducer(**kafka_client_options(settings.kafka))
    await producer.start()
    try:
        for topic in CONSUMED:
            for body in poison(topic):
                # The valid inspections below are keyed by their line: on their partition.
                meta = await producer.send_and_wait(topic, body, key=LINE.encode())
                sent[body] = (topic, meta.partition, meta.offset)
    finally:
        await producer.stop()

    # Valid inspections right behind the poison, on the topic the monitor and labeling read.
    async with open_aio_channel(GATEWAY) as channel:
        gateway: Any = inspection_pb2_grpc.InspectionServiceStub(channel)
        for index in range(INSPECTIONS_AFTER):
            await gateway.Inspect(
                inspection_pb2.InspectRequest(
                    image=screw_png(index),
                    line_id=LINE,
                    camera_id="cam-poison",
                    request_id=f"poison-{uuid.uuid4().hex}",
                ),
                timeout=30,
            )

    # Each consuming service dead-letters each poisoned record with a reason ...
    expected = {
        (body, consumer) for body, (topic, _, _) in sent.items() for consumer in CONSUMED[topic]
    }
    letters: dict[tuple[bytes, str], str] = {}
    reader = AIOKafkaConsumer(
        *{dlq_topic(topic) for topic in CONSUMED},
        **kafka_client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    try:

        async def all_dead_lettered() -> bool | None:
            batch = await reader.getmany(timeout_ms=500)
            for record in (r for rs in batch.values() for r in rs):
                headers = {k: v.decode() for k, v in record.headers}
                key = (record.value or b"", headers.get(CONSUMER, ""))
                if key in expected:
                    letters[key] = headers[REASON]
            return True if set(letters) == expected else None

        try:
            # Behind a backlog (the suite's earlier inspections) labeling and the monitor take
            # minutes to reach the poison on a 2-core machine: a deadline, not a wait.
            await eventually(all_dead_lettered, within=DRAIN_S, what="the dead letters")
        except AssertionError:
            left = expected - set(letters)
            missing = sorted({(sent[body][0], consumer) for body, consumer in left})
            raise AssertionError(f"not dead-lettered (topic, consumer): {missing}") from None
    finally:
        await reader.stop()
    assert all(reason.startswith("malformed event") for reason in letters.values()), letters

    # ... and commits past it: every group's committed offset reaches the end each poisoned
    # partition had once the valid inspections were in, so nothing is stuck behind the poison.
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    ends_reader = AIOKafkaConsumer(**kafka_client_options(settings.kafka), enable_auto_commit=False)
    await admin.start()
    await ends_reader.start()
    try:
        partitions = {TopicPartition(topic, p) for topic, p, _ in sent.values()}
        ends = await ends_reader.end_offsets(list(partitions))

        async def caught_up() -> bool | None:
            for partition in partitions:
                for group in CONSUMED[partition.topic]:
                    offsets = await admin.list_consumer_group_offsets(group)
                    at = offsets.get(partition)
                    if at is None or at.offset < ends[partition]:
                        return None
            return True

        await eventually(caught_up, within=DRAIN_S, what="every group past the poison and after it")
    finally:
        await ends_reader.stop()
        await admin.close()
    print(
        f"{len(sent)} poisoned records on {len(CONSUMED)} topics, {len(letters)} dead letters "
        f"by {len({c for _, c in letters})} services; every group committed to the end behind "
        f"them, {INSPECTIONS_AFTER} valid inspections on the same partition included"
    )
