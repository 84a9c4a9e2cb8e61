"""The event bus: FastStream + aiokafka with tracing, at-least-once commits, idempotency,
retries and dead letters. See :mod:`screwops_bus.bus`; dead letters are read back and replayed
with :mod:`screwops_bus.replay`."""

from screwops_bus.bus import Bus, RetryPolicy, is_transient
from screwops_bus.deadletter import DeadLetter, original_headers
from screwops_bus.idempotency import ProcessedEvents
from screwops_bus.ports import Emit, Publish
from screwops_bus.replay import (
    DeadLetterRecord,
    Replayed,
    read_dead_letters,
    replay,
    replay_dead_letters,
)

__all__ = [
    "Bus",
    "DeadLetter",
    "DeadLetterRecord",
    "Emit",
    "ProcessedEvents",
    "Publish",
    "Replayed",
    "RetryPolicy",
    "is_transient",
    "original_headers",
    "read_dead_letters",
    "replay",
    "replay_dead_letters",
]
