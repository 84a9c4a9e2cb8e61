"""The outbox and its relay, on in-memory documents: what a write owes Kafka goes out until Kafka
acknowledges it, each entry removed once and only its own."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_bus import (
    LEGACY_FLAG,
    OUTBOX,
    PENDING,
    Announcement,
    MongoOutbox,
    Relay,
    RetryPolicy,
    adopt_unannounced,
    announce_now,
    mark_sent,
    pending_index,
    publish_now,
)
from screwops_bus import outbox as outbox_module
from screwops_contracts import DatasetIngested

from tests.fakes import FakeDatabase, RecordingBus
from tests.support import dataset_ingested, eventually

QUICK = RetryPolicy(initial_wait=0.001, max_wait=0.002)


def owing(*datasets: str, flagged: bool = True) -> tuple[FakeDatabase, list[DatasetIngested]]:
    """A collection with one document per dataset, each owing its ``dataset.ingested``, and
    flagged pending as writers flag it (``flagged`` False: as written before the flag)."""
    db = FakeDatabase()
    events = [dataset_ingested(dataset) for dataset in datasets]
    for event in events:
        db["versions"].docs[event.payload.dataset_id] = {
            "_id": event.payload.dataset_id,
            OUTBOX: [Announcement(event).document()],
            **({PENDING: True} if flagged else {}),
        }
    return db, events


def outbox(db: FakeDatabase) -> MongoOutbox:
    return MongoOutbox(cast(AsyncIOMotorDatabase[Any], db), ["versions"])


async def test_a_pass_publishes_what_is_pending_and_removes_it() -> None:
    db, events = owing("a", "b")
    bus = RecordingBus("ingestion")

    assert await Relay(outbox(db), bus.publish).relay() == 2

    assert [e.event_id for e in bus] == [e.event_id for e in events]
    assert all(OUTBOX not in doc for doc in db["versions"].docs.values())
    assert all(PENDING not in doc for doc in db["versions"].docs.values())
    assert await Relay(outbox(db), bus.publish).relay() == 0


async def test_the_relay_finds_pending_documents_by_their_indexed_flag_alone() -> None:
    db, [event] = owing("a")
    # What FerretDB v1 answers from an index: the flag. A document the query does not name
    # is not relayed, whatever its outbox holds.
    db["versions"].docs["stray"] = {
        "_id": "stray",
        OUTBOX: [Announcement(dataset_ingested("stray")).document()],
        PENDING: False,
    }
    bus = RecordingBus("ingestion")

    assert await Relay(outbox(db), bus.publish).relay() == 1

    assert [e.event_id for e in bus] == [event.event_id]
    assert pending_index("versions").keys == ((PENDING, 1),)


async def test_documents_written_before_the_flag_are_relayed_once_flagged_at_start() -> None:
    db, events = owing("a", "b", flagged=False)
    bus = RecordingBus("ingestion")
    one = outbox(db)

    assert await Relay(one, bus.publish).relay() == 2

    assert [e.event_id for e in bus] == [e.event_id for e in events]
    assert all(OUTBOX not in doc and PENDING not in doc for doc in db["versions"].docs.values())
    # A later pass of the same relay asks by the flag alone.
    later = dataset_ingested("c")
    db["versions"].docs["c"] = {"_id": "c", OUTBOX: [Announcement(later).document()]}
    assert await Relay(one, bus.publish).relay() == 0


async def test_an_entry_left_after_one_is_sent_keeps_its_document_flagged() -> None:
    db, [first] = owing("a", flagged=False)
    versions = db["versions"]
    later = dataset_ingested("a-later")
    await versions.update_one({"_id": "a"}, {"$push": {OUTBOX: Announcement(later).document()}})

    await mark_sent(cast(Any, versions), "a", str(first.event_id))

    assert versions.docs["a"][PENDING] is True
    await mark_sent(cast(Any, versions), "a", str(later.event_id))
    assert OUTBOX not in versions.docs["a"]
    assert PENDING not in versions.docs["a"]


async def test_two_relays_at_once_publish_each_entry_at_least_once_and_remove_it_once() -> None:
    db, events = owing("a", "b", "c")
    bus = RecordingBus("ingestion")
    # Both passes read the outbox before either publishes.
    bus.gate = asyncio.Event()
    passes = [asyncio.create_task(Relay(outbox(db), bus.publish).relay()) for _ in range(2)]
    await asyncio.sleep(0.01)
    bus.gate.set()
    await asyncio.gather(*passes)

    assert {e.event_id for e in bus} == {e.event_id for e in events}
    assert len(bus) <= 2 * len(events)
    assert all(OUTBOX not in doc for doc in db["versions"].docs.values())
    assert db["versions"].updated == len(events)


async def test_marking_one_entry_sent_keeps_one_written_meanwhile() -> None:
    db, [first] = owing("a")
    versions = db["versions"]
    later = dataset_ingested("a-later")
    await versions.update_one({"_id": "a"}, {"$push": {OUTBOX: Announcement(later).document()}})

    await mark_sent(cast(Any, versions), "a", str(first.event_id))

    [left] = versions.docs["a"][OUTBOX]
    assert left["id"] == str(later.event_id)


async def test_the_relay_backs_off_while_kafka_is_away_and_delivers_once_it_is_back() -> None:
    db, [event] = owing("a")
    bus = RecordingBus("ingestion")
    bus.down = True
    relay = Relay(outbox(db), bus.publish, interval=0.01, retry=QUICK)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.05)
        assert not bus
        assert OUTBOX in db["versions"].docs["a"]
        bus.down = False

        async def sent() -> bool | None:
            return OUTBOX not in db["versions"].docs["a"] or None

        await eventually(sent, within=2, what="the relay to deliver", interval=0.01)
    finally:
        task.cancel()
    assert [e.event_id for e in bus] == [event.event_id]


async def test_a_relayed_event_is_the_one_written() -> None:
    db, [event] = owing("a")
    bus = RecordingBus("ingestion")

    await Relay(outbox(db), bus.publish).relay()

    assert bus == [event]


async def test_a_publish_kafka_never_acknowledges_is_given_up_after_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The producer holds a send while Kafka is away; the request that wrote the entry waits
    only :data:`PUBLISH_NOW_S` and leaves the rest to the relay."""
    monkeypatch.setattr(outbox_module, "PUBLISH_NOW_S", 0.05)
    sent = RecordingBus("ingestion")
    sent.gate = asyncio.Event()

    with pytest.raises(TimeoutError):
        await publish_now(sent.publish(dataset_ingested("screws")))
    assert not sent


async def test_announce_now_marks_an_acknowledged_announcement_sent() -> None:
    db, [event] = owing("a")
    bus = RecordingBus("ingestion")
    collection = cast(AsyncIOMotorDatabase[Any], db)["versions"]

    went = await announce_now(
        bus.publish,
        Announcement(event),
        lambda: mark_sent(collection, "a", str(event.event_id)),
        subject="a",
    )

    assert went
    assert bus == [event]
    assert OUTBOX not in db["versions"].docs["a"]


@pytest.mark.parametrize("broken", ["publish", "mark"])
async def test_announce_now_leaves_the_entry_to_the_relay_when_either_step_fails(
    broken: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A change whose at-once publish (or the removal of its entry) fails stands: the caller is
    answered, the entry stays pending and the log names the document and the topic."""
    monkeypatch.setattr(outbox_module, "PUBLISH_NOW_S", 0.05)
    db, [event] = owing("a")
    bus = RecordingBus("ingestion")
    if broken == "publish":
        bus.gate = asyncio.Event()
    marked: list[str] = []

    async def mark() -> None:
        if broken == "mark":
            raise ConnectionError("MongoDB went away")
        marked.append("a")

    went = await announce_now(bus.publish, Announcement(event), mark, subject="screws@v1")

    assert not went
    assert not marked
    assert db["versions"].docs["a"][OUTBOX]
    assert "screws@v1: dataset.ingested left to the outbox relay" in caplog.text


async def test_documents_from_before_the_outbox_are_adopted_once() -> None:
    """``published: false`` documents get the entry ``announcement_of`` builds (none for one
    that owes nothing yet) and lose the flag, as the published ones do, so a second start (or
    a second replica) adopts nothing more."""
    db = FakeDatabase()
    docs = db["versions"].docs
    docs["owes"] = {"_id": "owes", "dataset": "a", "published": False}
    docs["not-yet"] = {"_id": "not-yet", "dataset": None, "published": False}
    docs["sent"] = {"_id": "sent", "dataset": "c", "published": True}
    collection = cast(AsyncIOMotorDatabase[Any], db)["versions"]
    built: list[str] = []

    async def owed(doc: dict[str, Any]) -> Announcement | None:
        if doc["dataset"] is None:
            return None
        built.append(doc["_id"])
        return Announcement(dataset_ingested(doc["dataset"]))

    assert await adopt_unannounced(collection, owed) == 1
    assert await adopt_unannounced(collection, owed) == 0

    assert built == ["owes"]
    assert all(LEGACY_FLAG not in doc for doc in docs.values())
    assert docs["owes"][PENDING] is True
    assert len(docs["owes"][OUTBOX]) == 1
    assert OUTBOX not in docs["not-yet"]
    assert OUTBOX not in docs["sent"]
