"""The MongoDB-wire server is real: documents are stored and unique indexes are enforced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError
from screwops_settings import StackSettings

from tests.support import unique


@pytest.fixture
async def database(settings: StackSettings) -> AsyncIterator[AsyncIOMotorDatabase[Any]]:
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(settings.mongo.uri.get_secret_value())
    db = client[unique("it").replace("-", "_")]
    yield db
    await client.drop_database(db.name)
    client.close()


async def test_insert_then_find_returns_the_document(
    database: AsyncIOMotorDatabase[Any],
) -> None:
    await database.images.insert_one({"_id": "sha-1", "label": "good", "size": [256, 256]})
    found = await database.images.find_one({"label": "good"})
    assert found == {"_id": "sha-1", "label": "good", "size": [256, 256]}


async def test_a_unique_index_refuses_a_duplicate(database: AsyncIOMotorDatabase[Any]) -> None:
    await database.labels.create_index([("image", 1), ("annotator", 1)], unique=True)
    await database.labels.insert_one({"image": "sha-1", "annotator": "ana", "label": "good"})
    with pytest.raises(DuplicateKeyError):
        await database.labels.insert_one({"image": "sha-1", "annotator": "ana", "label": "bad"})
    assert await database.labels.count_documents({}) == 1
