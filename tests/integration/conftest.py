"""Integration tests run against the real servers that ``make up`` started."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from screwops_contracts import dlq_topic
from screwops_settings import StackSettings, kafka_client_options

from tests.support import (
    log_in_to_kafka_as_the_stack_admin,
    log_in_to_minio_as_the_stack_root,
    unique,
)

log_in_to_kafka_as_the_stack_admin()
log_in_to_minio_as_the_stack_root()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings() -> StackSettings:
    return StackSettings()


async def _topics(settings: StackSettings, *names: str) -> AsyncIterator[None]:
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=1, replication_factor=1) for n in names]
        )
        yield
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


@pytest.fixture
async def kafka_topic(settings: StackSettings) -> AsyncIterator[str]:
    """A fresh single-partition topic (the broker does not auto-create topics)."""
    name = unique("it")
    async for _ in _topics(settings, name):
        yield name


@pytest.fixture
async def event_topic(settings: StackSettings) -> AsyncIterator[str]:
    """A fresh single-partition topic with its dead-letter twin, for one consumer's events."""
    name = unique("it")
    async for _ in _topics(settings, name, dlq_topic(name)):
        yield name


@pytest.fixture
async def mongo_db(settings: StackSettings) -> AsyncIterator[AsyncIOMotorDatabase[Any]]:
    """A database of its own, dropped afterwards."""
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(settings.mongo.uri.get_secret_value())
    db = client[unique("it").replace("-", "_")]
    yield db
    await client.drop_database(db.name)
    client.close()
