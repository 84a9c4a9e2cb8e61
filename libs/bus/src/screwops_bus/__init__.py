"""The event bus: FastStream + aiokafka with tracing, at-least-once commits, idempotency,
retries and dead letters. See :mod:`screwops_bus.bus`."""

from screwops_bus.bus import Bus, RetryPolicy, is_transient
from screwops_bus.deadletter import DeadLetter, original_headers
from screwops_bus.idempotency import ProcessedEvents

__all__ = [
    "Bus",
    "DeadLetter",
    "ProcessedEvents",
    "RetryPolicy",
    "is_transient",
    "original_headers",
]
