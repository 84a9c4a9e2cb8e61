"""In-memory stand-ins for validation's store, object store, emit and the bus's database."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from screwops_contracts import Event
from screwops_validation.store import ReportRecord

P = TypeVar("P", bound=BaseModel)


class FakeStore:
    def __init__(self) -> None:
        self.reports: dict[str, ReportRecord] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def save_report(self, record: ReportRecord) -> None:
        self.reports[record.id] = record


class Emitted(list[Event[Any]]):
    """Collects what the service emits, as the bus would build it."""

    async def __call__(
        self, event_type: type[Event[P]], payload: P, /, *, cause: Event[Any]
    ) -> None:
        self.append(event_type.caused_by(cause, payload, producer="validation"))
