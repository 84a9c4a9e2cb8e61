"""Integration tests run against the real servers that ``make up`` started."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from screwops_settings import StackSettings

from tests.support import unique


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings() -> StackSettings:
    return StackSettings()


@pytest.fixture
async def kafka_topic(settings: StackSettings) -> AsyncIterator[str]:
    """A fresh single-partition topic (the broker does not auto-create topics)."""
    name = unique("it")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()
