"""In-memory stand-in for validation's store (emit, MinIO and the bus's database: tests.fakes)."""

from __future__ import annotations

from screwops_validation.store import ReportRecord, report_id


class FakeStore:
    """:class:`ValidationStore` in memory, with the claim and completion of reports."""

    def __init__(self) -> None:
        self.reports: dict[str, ReportRecord] = {}
        self.attempts: dict[str, int] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def get_report(self, dataset_id: str, version: int) -> ReportRecord | None:
        return self.reports.get(report_id(dataset_id, version))

    async def claim_report(
        self, dataset_id: str, version: int, *, stale_after_s: float
    ) -> int | ReportRecord:
        key = report_id(dataset_id, version)
        done = self.reports.get(key)
        if done is not None:
            return done
        self.attempts[key] = self.attempts.get(key, 0) + 1
        return self.attempts[key]

    async def complete_report(self, record: ReportRecord) -> bool:
        if record.id in self.reports:
            return False
        self.reports[record.id] = record
        return True

    async def latest_split_key(self, dataset_id: str, *, before: int) -> str | None:
        passed = [
            r
            for r in self.reports.values()
            if r.dataset_id == dataset_id and r.version < before and r.passed
        ]
        return max(passed, key=lambda r: r.version).split_key if passed else None
