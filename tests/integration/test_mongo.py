"""The MongoDB-wire server is real: documents are stored and unique indexes are enforced."""

from __future__ import annotations

from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError


async def test_insert_then_find_returns_the_document(
    mongo_db: AsyncIOMotorDatabase[Any],
) -> None:
    await mongo_db.images.insert_one({"_id": "sha-1", "label": "good", "size": [256, 256]})
    found = await mongo_db.images.find_one({"label": "good"})
    assert found == {"_id": "sha-1", "label": "good", "size": [256, 256]}


async def test_a_unique_index_refuses_a_duplicate(mongo_db: AsyncIOMotorDatabase[Any]) -> None:
    await mongo_db.labels.create_index([("image", 1), ("annotator", 1)], unique=True)
    await mongo_db.labels.insert_one({"image": "sha-1", "annotator": "ana", "label": "good"})
    with pytest.raises(DuplicateKeyError):
        await mongo_db.labels.insert_one({"image": "sha-1", "annotator": "ana", "label": "bad"})
    assert await mongo_db.labels.count_documents({}) == 1
