"""Two labeling instances in one consumer group split inspection.completed's partitions; one is
killed mid-stream and the other takes its partitions over after the rebalance: every inspection
is queued for review, each exactly once."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from screwops.v1 import labeling_pb2, labeling_pb2_grpc
from screwops_contracts import InspectionCompleted, InspectionCompletedPayload, Topic
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings, kafka_client_options

from tests.e2e.conftest import REPO
from tests.support import eventually, free_port, unique

GROUP = "labeling"
LABELING = "127.0.0.1:50053"
EVENTS = 90
LINES = 6  # keys spread over the topic's partitions


def inspection(line: str, index: int) -> InspectionCompleted:
    """An inspection on the threshold with a kept image: labeling queues it as low confidence."""
    return InspectionCompleted.origin(
        InspectionCompletedPayload(
            request_id=f"scale-{index}",
            line_id=line,
            camera_id="cam-1",
            verdict="DEFECT",
            defect_probability=0.5,
            threshold=0.5,
            model_name="screw-classifier",
            model_version=1,
            trace_id="0" * 32,
            image_key=f"inspections/ab/{secrets.token_hex(32)}",
            latency_ms=5.0,
        ),
        producer="gateway",
    )


async def shares(admin: AIOKafkaAdminClient) -> list[int] | None:
    """The partitions of inspection.completed held by each member of the group that has any,
    once the group is stable (None while it rebalances).

    A service runs one consumer per topic it reads, all in its group, so members that read
    other topics are left out.
    """
    [response] = await admin.describe_consumer_groups([GROUP])
    [group] = response.to_object()["groups"]
    if group["state"] != "Stable":
        return None
    held = []
    for member in group["members"]:
        assignment = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
        mine = [p for p in assignment.partitions() if p.topic == Topic.INSPECTION_COMPLETED]
        if mine:
            held.append(len(mine))
    return sorted(held)


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(600)
async def test_a_second_instance_shares_the_work_and_inherits_it_when_killed(
    tmp_path: Path,
) -> None:
    settings = StackSettings()
    lines = [unique("line-scale") for _ in range(LINES)]
    env = os.environ | {
        "SCREWOPS_LABELING_GRPC_PORT": str(free_port()),
        "SCREWOPS_LABELING_METRICS_PORT": str(free_port()),
    }
    log = (tmp_path / "labeling-2.log").open("wb")
    second = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "screwops_labeling",
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    producer = AIOKafkaProducer(**kafka_client_options(settings.kafka))
    await admin.start()
    await producer.start()
    try:

        async def split() -> list[int] | None:
            held = await shares(admin)
            return held if held is not None and len(held) == 2 else None

        before = await eventually(split, within=120, what="both instances holding partitions")
        sent = []
        for index in range(EVENTS):
            event = inspection(lines[index % LINES], index)
            await producer.send_and_wait(
                Topic.INSPECTION_COMPLETED, event.model_dump_json().encode(), key=event.key
            )
            sent.append(str(event.event_id))
            if index == EVENTS // 3:
                second.send_signal(signal.SIGKILL)  # mid-stream, its partitions unfinished
            await asyncio.sleep(0.02)
        await second.wait()

        async def inherited() -> list[int] | None:
            held = await shares(admin)
            return held if held == [settings.kafka.partitions] else None

        await eventually(inherited, within=120, what="the survivor holding every partition")
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()
        log.close()
        await producer.stop()
        await admin.close()

    async with open_aio_channel(LABELING) as channel:
        stub: Any = labeling_pb2_grpc.LabelingServiceStub(channel)

        async def queued() -> list[str] | None:
            ids: list[str] = []
            for line in lines:
                token = ""
                while True:
                    page = await stub.ListReviewQueue(
                        labeling_pb2.ListReviewQueueRequest(
                            line_id=line, page_size=100, page_token=token
                        ),
                        timeout=10,
                    )
                    ids += [item.inspection_id for item in page.review_items]
                    token = page.next_page_token
                    if not token:
                        break
            return ids if len(set(ids)) >= EVENTS else None

        ids = await eventually(queued, within=120, what="every inspection queued for review")
    print(
        f"{EVENTS} inspections over {LINES} lines; partitions split {before} between the two "
        f"instances, the second killed after {EVENTS // 3} events, the survivor then held all "
        f"{settings.kafka.partitions}; {len(ids)} inspections queued"
    )
    assert sorted(ids) == sorted(sent), "each inspection queued exactly once"
