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

    async def latest_split_key(self, dataset_id: str, *, before: int) -> str | None:
        passed = [
            r
            for r in self.reports.values()
            if r.dataset_id == dataset_id and r.version < before and r.passed
        ]
        return max(passed, key=lambda r: r.version).split_key if passed else None
