"""Length limits of the free text clients and operators send, in one place.

Whatever a person or a client types (who, why, a file's name, a line's name) is stored in
MongoDB documents, carried in events and shown on pages; without a limit one request can fill a
document past MongoDB's 16 MiB, or an event past Kafka's message size. The gRPC adapters refuse
a longer value with INVALID_ARGUMENT through :func:`bounded`, and the event contracts carry the
same limits as ``max_length``, so an event that breaks one is dead-lettered with the reason.
docs/operations.md lists them.
"""

from __future__ import annotations

from screwops_errors import InvalidInputError

__all__ = [
    "MAX_FILENAME_CHARS",
    "MAX_FILE_PATH_CHARS",
    "MAX_ID_CHARS",
    "MAX_NAME_CHARS",
    "MAX_PATH_CHARS",
    "MAX_REASON_CHARS",
    "bounded",
]

MAX_ID_CHARS = 64
"""Identifiers a client picks: dataset, line and camera ids, defect types, label-map words."""

MAX_NAME_CHARS = 128
"""Who did something (actor, annotator, reviewer, operator, an event's producer), model names,
request ids and an event's correlation id."""

MAX_REASON_CHARS = 1024
"""Why something was done: a promotion's, rollback's or early close's reason."""

MAX_FILENAME_CHARS = 255
"""A file's name as uploaded: what most file systems allow for one path segment."""

MAX_FILE_PATH_CHARS = 1024
"""A file's name as a manifest and a refusal record it: its path inside an upload's archive, an
import root or the drop bucket (MinIO's own limit of an object key)."""

MAX_PATH_CHARS = 4096
"""A server-side path to import from: Linux's PATH_MAX."""


def bounded(name: str, value: str, limit: int) -> str:
    """``value``, or :class:`InvalidInputError` naming the field and its limit when longer."""
    if len(value) > limit:
        raise InvalidInputError(f"{name} is {len(value)} characters, over the limit of {limit}")
    return value
