"""The processed-events record: one document per (consumer, event_id).

Kafka delivers at least once, so a consumer may see an event again after a crash or a rebalance.
The record is written after the handler's effects and publishes, and checked before the handler
runs, so a redelivered event has no second effect. A crash between the effects and the record is
covered by the handlers themselves: they write with deterministic ids and publish events whose
ids derive from their cause (see ``Event.caused_by``), so running twice changes nothing either.
It needs no transactions, which FerretDB v1 lacks.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError


def collection_name(consumer: str) -> str:
    """Each consumer owns its own collection (one owner per collection, as everywhere)."""
    return "processed_events_" + re.sub(r"[^A-Za-z0-9_]", "_", consumer)


class ProcessedEvents:
    """Which events one consumer has fully processed."""

    def __init__(self, db: AsyncIOMotorDatabase[Any], consumer: str) -> None:
        self.consumer = consumer
        self._collection: AsyncIOMotorCollection[Any] = db[collection_name(consumer)]

    async def seen(self, event_id: str) -> bool:
        """Whether this consumer already finished ``event_id``."""
        return await self._collection.find_one({"_id": event_id}, {"_id": 1}) is not None

    async def record(self, event_id: str, *, topic: str) -> None:
        """Remember that ``event_id`` is done; recording it twice is harmless."""
        try:
            await self._collection.insert_one(
                {"_id": event_id, "topic": topic, "processed_at": datetime.now(UTC)}
            )
        except DuplicateKeyError:
            return
