"""In-memory stand-in for validation's store (emit, MinIO and the bus's database: tests.fakes)."""

from __future__ import annotations

from screwops_validation.store import ReportRecord


class FakeStore:
    def __init__(self) -> None:
        self.reports: dict[str, ReportRecord] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def save_report(self, record: ReportRecord) -> None:
        self.reports[record.id] = record
