"""Data written to the stack survives ``make down && make up``: Kafka messages and a consumer
group's committed offset, a MinIO object, a MongoDB document."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from motor.motor_asyncio import AsyncIOMotorClient
from screwops_settings import StackSettings, kafka_client_options

from tests.support import minio_client, unique

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.restart


def make(target: str) -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", target], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, f"make {target} failed:\n{result.stdout}\n{result.stderr}"


async def test_everything_written_before_a_restart_is_there_after_it(
    settings: StackSettings, kafka_topic: str
) -> None:
    group = unique("group")
    bucket = unique("it")
    database = unique("it").replace("-", "_")
    payload = os.urandom(5 * 1024 * 1024)

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            kafka_topic,
            **kafka_client_options(settings.kafka),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    producer = AIOKafkaProducer(**kafka_client_options(settings.kafka), acks="all")
    await producer.start()
    for i in range(6):
        await producer.send_and_wait(kafka_topic, f"m{i}".encode())
    await producer.stop()
    first = consumer()
    await first.start()
    for _ in range(3):
        await first.getone()
    await first.commit()
    await first.stop()

    s3 = minio_client(settings.minio)
    s3.make_bucket(bucket)
    s3.put_object(bucket, "blob", io.BytesIO(payload), len(payload))
    mongo: AsyncIOMotorClient[Any] = AsyncIOMotorClient(settings.mongo.uri.get_secret_value())
    await mongo[database].runs.insert_one({"_id": "run-1", "status": "finished"})
    mongo.close()

    make("down")
    make("up")

    again = consumer()
    await again.start()
    try:
        resumed = await again.getone()
    finally:
        await again.stop()
    assert resumed.value == b"m3"

    response = s3.get_object(bucket, "blob")
    try:
        assert hashlib.sha256(response.read()).digest() == hashlib.sha256(payload).digest()
    finally:
        response.close()
        response.release_conn()
    s3.remove_object(bucket, "blob")
    s3.remove_bucket(bucket)

    mongo = AsyncIOMotorClient(settings.mongo.uri.get_secret_value())
    try:
        assert await mongo[database].runs.find_one({"_id": "run-1"}) == {
            "_id": "run-1",
            "status": "finished",
        }
        await mongo.drop_database(database)
    finally:
        mongo.close()
