"""Write, then announce: the events a state change owes Kafka, kept in the changed document.

A service that records a fact and then publishes it cannot do both at once: there are no
transactions (FerretDB v1 has none, and Kafka is not the database), so a publish that fails after
the write would lose the event, and a retried request finds the fact already written and has
nothing left to announce. So the announcement is written first, as a pending entry in the
``outbox`` array of the very document the fact changes, by the same single-document update
(:meth:`Announcement.document` builds the entry). The service then publishes it at once and
removes the entry (:func:`announce_now`, with :func:`mark_sent`); whatever is still pending after
that (a failed publish, a crash, a replica that died) is published by the service's
:class:`Relay`, at start-up and then continuously, until Kafka acknowledges it.

The event id is fixed when the entry is written, so every publish of an entry is the same event
and the consumers' processed-events record drops the repeats. An entry is removed only by a
compare-and-swap on the document's outbox, so two relays (or a relay and the request that wrote
it) at worst publish an entry twice, and never drop one they did not publish. Only operations
FerretDB v1 has are used: ``$exists``, equality, ``$set``, ``$unset`` (and ``$push`` by writers).

A relay finds pending documents by the scalar flag ``outbox_pending`` (:data:`PENDING`), which
the update that writes an entry sets and the one that removes the last unsets, under an index
each service declares (:func:`pending_index`): FerretDB v1 pushes an equality on an indexed
field down to its index, and scans the whole collection for ``$exists``. Documents written
before the flag existed are flagged once, when a relay starts (the old ``$exists`` query);
those written before the outbox, with a ``published`` flag, are adopted once, when their service
starts (:func:`adopt_unannounced`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from screwops_contracts import EVENTS_BY_TOPIC, Event
from screwops_storage import Document, IndexSpec, mongo_errors
from screwops_telemetry import resumed_trace

from screwops_bus.bus import RetryPolicy
from screwops_bus.ports import Publish

OUTBOX = "outbox"
"""The field of a document that holds its pending announcements, oldest first; absent when none."""
PENDING = "outbox_pending"
"""True while a document holds pending announcements, absent when none: set by every update
that writes an entry into :data:`OUTBOX`, unset with it by :func:`mark_sent`."""
LEGACY_FLAG = "published"
"""The flag documents carried before the outbox: false until their event was acknowledged
(see :func:`adopt_unannounced`)."""
RELAY_INTERVAL_S = 1.0
"""How often a relay looks for pending announcements when the last pass went well."""
PUBLISH_NOW_S = 5.0
"""How long :func:`publish_now` waits for Kafka's acknowledgement before leaving the entry to
the relay."""
RELAY_BATCH = 100
"""Documents a relay takes per collection and pass."""
_SWAPS = 5
"""Attempts at removing a sent entry while others change the same outbox; a relay pass after
that publishes it again (a duplicate) and removes it then."""

log = logging.getLogger("screwops.bus.outbox")


@dataclass(frozen=True)
class Announcement:
    """An event a state change owes Kafka, and the trace of the request that made the change."""

    event: Event[Any]
    traceparent: str = ""
    """W3C ``traceparent`` of the change, so a relayed event still joins its trace."""

    @property
    def id(self) -> str:
        return str(self.event.event_id)

    def document(self) -> Document:
        """The outbox entry, to be written by the same update as the change it announces."""
        return {
            "id": self.id,
            "topic": str(self.event.TOPIC),
            "event": self.event.model_dump(mode="json"),
            "traceparent": self.traceparent,
        }

    @classmethod
    def from_document(cls, entry: Document) -> Announcement:
        event = EVENTS_BY_TOPIC[entry["topic"]].model_validate(entry["event"])
        return cls(event, entry.get("traceparent", ""))


def pending_index(collection: str) -> IndexSpec:
    """The index a relay finds ``collection``'s pending documents by (see the module docstring);
    declared with the collection's other indexes."""
    return IndexSpec(collection, ((PENDING, 1),))


def pending_in(doc: Document) -> tuple[Announcement, ...]:
    """The announcements a document still owes, oldest first."""
    return tuple(Announcement.from_document(entry) for entry in doc.get(OUTBOX) or ())


@dataclass(frozen=True)
class Pending:
    """An announcement found pending, and the document that holds it."""

    collection: str
    document_id: Any
    announcement: Announcement


class Outbox(Protocol):
    """Where a relay finds pending announcements and marks them sent."""

    async def pending(self) -> list[Pending]:
        """Pending announcements, each document's in the order they were written."""

    async def sent(self, pending: Pending) -> None:
        """Remove that one entry, now that Kafka acknowledged it."""


class MongoOutbox:
    """:class:`Outbox` over the ``outbox`` fields of a service's collections."""

    def __init__(self, db: AsyncIOMotorDatabase[Document], collections: Iterable[str]) -> None:
        self._db = db
        self.collections = tuple(collections)
        self._flagged = False

    async def pending(self) -> list[Pending]:
        if not self._flagged:
            await self._flag_unflagged()
            self._flagged = True
        found = []
        for name in self.collections:
            with mongo_errors():
                docs = (
                    await self._db[name]
                    .find({PENDING: True}, {OUTBOX: 1})
                    .limit(RELAY_BATCH)
                    .to_list(RELAY_BATCH)
                )
            found += [Pending(name, doc["_id"], a) for doc in docs for a in pending_in(doc)]
        return found

    async def sent(self, pending: Pending) -> None:
        await mark_sent(self._db[pending.collection], pending.document_id, pending.announcement.id)

    async def _flag_unflagged(self) -> None:
        """Flag the documents written before :data:`PENDING` existed that still owe
        announcements, so the flag finds them too; once per relay, the only full scan."""
        for name in self.collections:
            with mongo_errors():
                await self._db[name].update_many(
                    {OUTBOX: {"$exists": True}, PENDING: {"$exists": False}},
                    {"$set": {PENDING: True}},
                )


async def mark_sent(
    collection: AsyncIOMotorCollection[Document], document_id: Any, announcement_id: str
) -> None:
    """Remove the entry ``announcement_id`` from the document's outbox, and only that one.

    The outbox is swapped only if it is still what was read, so an entry written meanwhile
    survives; the field goes once it is empty, with the :data:`PENDING` flag, so pending
    documents are those that have it. (The flag is set again with what is left, so a document
    written without it is still found.)
    """
    for _ in range(_SWAPS):
        with mongo_errors():
            doc = await collection.find_one({"_id": document_id}, {OUTBOX: 1})
        entries = (doc or {}).get(OUTBOX) or []
        rest = [entry for entry in entries if entry.get("id") != announcement_id]
        if len(rest) == len(entries):
            return  # sent and removed by someone else
        update = (
            {"$set": {OUTBOX: rest, PENDING: True}}
            if rest
            else {"$unset": {OUTBOX: "", PENDING: ""}}
        )
        with mongo_errors():
            result = await collection.update_one({"_id": document_id, OUTBOX: entries}, update)
        if result.matched_count:
            return
    log.warning("%s: %s stays pending; the outbox kept changing", document_id, announcement_id)


async def publish_now(sending: Awaitable[None]) -> None:
    """Wait for ``sending``, the publish of an announcement just written, at most
    :data:`PUBLISH_NOW_S` for Kafka's acknowledgement (:class:`TimeoutError` past it).

    The entry is in its document already, so the request that wrote it need not wait for Kafka.
    With the broker gone, the producer holds a send until its request timeout (40 s) or, while
    the partition's leader is still known, until the broker is back (an idempotent batch does not
    expire then): an upload with Kafka stopped answered after 42 s, past the console's 10 s
    deadline. A send given up here may still be delivered once Kafka is back, and the relay
    publishes the entry too: the same event id twice, which consumers drop.
    """
    await asyncio.wait_for(sending, PUBLISH_NOW_S)


async def announce_now(
    publish: Callable[[Event[Any]], Awaitable[None]],
    announcement: Announcement,
    sent: Callable[[], Awaitable[None]],
    *,
    subject: str,
) -> bool:
    """Publish an announcement just written, in its change's trace, and call ``sent`` (which
    removes its entry) once Kafka acknowledged it; whether it went out.

    A failure of either is only logged: the change stands and its entry stays pending for the
    relay, since a retried request finds the change made and has nothing left to announce. The
    wait for Kafka is bounded by :func:`publish_now`. ``subject`` names the changed document in
    the log.
    """
    try:
        with resumed_trace(announcement.traceparent, "outbox.announce"):
            await publish_now(publish(announcement.event))
        await sent()
    except Exception as exc:
        log.warning("%s: %s left to the outbox relay: %r", subject, announcement.event.TOPIC, exc)
        return False
    return True


async def adopt_unannounced(
    collection: AsyncIOMotorCollection[Document],
    announcement_of: Callable[[Document], Awaitable[Announcement | None]],
) -> int:
    """Give the documents written before the outbox that still owe their announcement (their
    :data:`LEGACY_FLAG` false) an outbox entry, for the relay; how many were given one.

    Before the outbox, a service kept its event in the document (or rebuilt it from it) with a
    ``published`` flag and announced the unpublished ones at its next start; that start-up pass
    is gone, so without this they would never be announced. ``announcement_of`` builds the
    event a document owes, or None when it owes none yet (it will be announced the new way).
    Each update is conditional on the flag and removes it, with the flag of the published ones,
    so a document is adopted once whatever the number of starts or replicas.
    """
    with mongo_errors():
        docs = await collection.find({LEGACY_FLAG: False}).to_list(None)
    adopted = 0
    for doc in docs:
        announcement = await announcement_of(doc)
        update: Document = {"$unset": {LEGACY_FLAG: ""}}
        if announcement is not None:
            update |= {"$set": {PENDING: True}, "$push": {OUTBOX: announcement.document()}}
        with mongo_errors():
            result = await collection.update_one({"_id": doc["_id"], LEGACY_FLAG: False}, update)
        if announcement is not None and result.matched_count:
            adopted += 1
            log.info("%s: %s adopted by the outbox", doc["_id"], announcement.event.TOPIC)
    with mongo_errors():
        await collection.update_many({LEGACY_FLAG: True}, {"$unset": {LEGACY_FLAG: ""}})
    return adopted


class Relay:
    """Publishes pending announcements until Kafka acknowledges them, then marks them sent.

    :meth:`run` is a service's background work: a pass at once (what an earlier run left
    pending) and then every ``interval``; a pass that fails (Kafka or the database away) is
    followed by the retries' exponential backoff instead, so an outage is not hammered.
    """

    def __init__(
        self,
        outbox: Outbox,
        publish: Publish,
        *,
        interval: float = RELAY_INTERVAL_S,
        retry: RetryPolicy | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._outbox = outbox
        self._publish = publish
        self._interval = interval
        self._retry = retry or RetryPolicy()
        self._pending = 0
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("screwops.bus")
        self._relayed = meter.create_counter(
            "screwops_outbox_relayed",
            description="Pending announcements the outbox relay published and marked sent, by "
            "topic (each one a publish that failed or was cut short when its change was written).",
        )
        meter.create_observable_gauge(
            "screwops_outbox_pending",
            callbacks=[self._observe_pending],
            description="Announcements the outbox relay found pending at its last pass.",
        )

    async def relay(self) -> int:
        """One pass: publish every pending announcement, in order; how many went out.

        Raises the first failure after trying the other documents' announcements, so one that
        Kafka refuses does not hold up the rest; a document's later ones wait for it, so each
        document's announcements go out in the order they were written.
        """
        pending = await self._outbox.pending()
        self._pending = len(pending)
        failure: Exception | None = None
        held: set[tuple[str, Any]] = set()
        relayed = 0
        for found in pending:
            where = (found.collection, found.document_id)
            if where in held:
                continue
            try:
                await self._send(found)
            except Exception as exc:
                log.warning("could not relay %s: %r", found.announcement.id, exc)
                failure = failure or exc
                held.add(where)
                continue
            relayed += 1
        self._pending -= relayed
        if failure is not None:
            raise failure
        return relayed

    async def run(self) -> None:
        """Relay until cancelled (see the class docstring)."""
        failures = 0
        while True:
            try:
                await self.relay()
            except Exception:
                failures += 1
                wait = max(self._interval, self._retry.backoff(failures))
                log.exception(
                    "outbox relay pass %d in a row failed; next in %.1f s", failures, wait
                )
            else:
                failures = 0
                wait = self._interval
            await asyncio.sleep(wait)

    async def _send(self, found: Pending) -> None:
        announcement = found.announcement
        with resumed_trace(announcement.traceparent, "outbox.relay"):
            await self._publish(announcement.event)
        await self._outbox.sent(found)
        self._relayed.add(1, {"topic": str(announcement.event.TOPIC)})
        log.info("relayed %s %s left pending", announcement.event.TOPIC, announcement.id)

    def _observe_pending(self, options: CallbackOptions) -> Sequence[Observation]:
        return [Observation(self._pending)]


__all__ = [
    "LEGACY_FLAG",
    "OUTBOX",
    "PENDING",
    "Announcement",
    "MongoOutbox",
    "Outbox",
    "Pending",
    "Relay",
    "adopt_unannounced",
    "announce_now",
    "mark_sent",
    "pending_in",
    "pending_index",
    "publish_now",
]
