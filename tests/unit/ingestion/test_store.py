"""Ingestion's MongoDB store on in-memory documents: what versions written before the outbox
still owed Kafka."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_bus import OUTBOX, MongoOutbox, Relay
from screwops_ingestion.store import OUTBOXES, VERSIONS, MongoIngestionStore

from tests.fakes import FakeDatabase, RecordingBus
from tests.support import dataset_ingested


def legacy_version(db: FakeDatabase, dataset: str, *, published: bool) -> str:
    """A version as ingestion wrote it before the outbox (62f2e10^): its event kept whole and a
    ``published`` flag, false until Kafka acknowledged the event."""
    event = dataset_ingested(dataset)
    db[VERSIONS].docs[f"{dataset}@v1"] = {
        "_id": f"{dataset}@v1",
        "dataset_id": dataset,
        "version": 1,
        "manifest_key": event.payload.manifest_key,
        "manifest_sha256": "0" * 64,
        "image_count": 4,
        "added_count": 4,
        "event": event.model_dump(mode="json"),
        "created_at": datetime(2026, 11, 1, tzinfo=UTC),
        "published": published,
        "traceparent": "",
    }
    return str(event.event_id)


async def test_a_version_never_announced_before_the_outbox_is_relayed_once() -> None:
    """Issue 18: the start-up pass that announced ``published: false`` versions is gone; the
    service's start queues them in their outbox instead, once, and the relay announces them."""
    db = FakeDatabase()
    owed = legacy_version(db, "screws", published=False)
    legacy_version(db, "bolts", published=True)
    mongo = cast(AsyncIOMotorDatabase[Any], db)
    store = MongoIngestionStore(mongo)

    assert await store.adopt_unannounced() == 1
    assert await store.adopt_unannounced() == 0, "once, whatever the number of starts"

    bus = RecordingBus("ingestion")
    assert await Relay(MongoOutbox(mongo, OUTBOXES), bus.publish).relay() == 1
    assert [str(e.event_id) for e in bus] == [owed]
    assert all("published" not in doc for doc in db[VERSIONS].docs.values())
    assert all(OUTBOX not in doc for doc in db[VERSIONS].docs.values())
