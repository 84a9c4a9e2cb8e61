"""The event bus: FastStream + aiokafka with tracing, at-least-once commits, idempotency,
retries and dead letters. See :mod:`screwops_bus.bus`; dead letters are read back and replayed
with :mod:`screwops_bus.replay`; a write's announcements go out through
:mod:`screwops_bus.outbox`."""

from screwops_bus.bus import Bus, RetryPolicy, is_transient
from screwops_bus.deadletter import BodyStore, DeadLetter, StoredBody, original_headers
from screwops_bus.idempotency import ProcessedEvents
from screwops_bus.outbox import (
    LEGACY_FLAG,
    OUTBOX,
    PENDING,
    Announcement,
    MongoOutbox,
    Outbox,
    Pending,
    Relay,
    adopt_unannounced,
    announce_now,
    mark_sent,
    pending_in,
    pending_index,
    publish_now,
)
from screwops_bus.ports import Emit, Publish
from screwops_bus.replay import (
    DeadLetterRecord,
    Replayed,
    read_dead_letters,
    replay,
    replay_dead_letters,
)

__all__ = [
    "LEGACY_FLAG",
    "OUTBOX",
    "PENDING",
    "Announcement",
    "BodyStore",
    "Bus",
    "DeadLetter",
    "DeadLetterRecord",
    "Emit",
    "MongoOutbox",
    "Outbox",
    "Pending",
    "ProcessedEvents",
    "Publish",
    "Relay",
    "Replayed",
    "RetryPolicy",
    "StoredBody",
    "adopt_unannounced",
    "announce_now",
    "is_transient",
    "mark_sent",
    "original_headers",
    "pending_in",
    "pending_index",
    "publish_now",
    "read_dead_letters",
    "replay",
    "replay_dead_letters",
]
