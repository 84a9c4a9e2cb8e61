"""In-memory stand-in for validation's store (emit, MinIO and the bus's database: tests.fakes)."""

from __future__ import annotations

from collections.abc import Callable

from screwops_storage import ClaimTimes, Held
from screwops_storage.claims import AttemptObjects
from screwops_validation.store import ReportRecord, report_id


class FakeStore:
    """:class:`ValidationStore` in memory, with the fenced claim and completion of reports: a
    claim answers :class:`Held` while its record id is in :attr:`live`, else it takes the work
    (over) with the next number, and only the latest attempt completes the record."""

    def __init__(self) -> None:
        self.reports: dict[str, ReportRecord] = {}
        self.attempts: dict[str, int] = {}
        self.live: set[str] = set()
        self.claims = 0
        self.refused = 0
        """Renewals refused: the attempt renewing had lost its claim."""

    async def ensure_indexes(self) -> None:
        return None

    async def get_report(self, dataset_id: str, version: int) -> ReportRecord | None:
        return self.reports.get(report_id(dataset_id, version))

    async def claim_report(
        self, dataset_id: str, version: int, *, times: ClaimTimes
    ) -> int | Held | ReportRecord:
        key = report_id(dataset_id, version)
        self.claims += 1
        done = self.reports.get(key)
        if done is not None:
            return done
        if key in self.live:
            return Held(self.attempts[key])
        self.attempts[key] = self.attempts.get(key, 0) + 1
        return self.attempts[key]

    async def renew_report(self, dataset_id: str, version: int, attempt: int) -> bool:
        key = report_id(dataset_id, version)
        held = key not in self.reports and self.attempts.get(key) == attempt
        self.refused += not held
        return held

    async def complete_report(self, record: ReportRecord, attempt: int) -> bool:
        if record.id in self.reports or self.attempts.get(record.id) != attempt:
            return False
        self.reports[record.id] = record
        return True

    async def sweep_attempts(
        self,
        objects: AttemptObjects,
        attempt_of: Callable[[str], tuple[str, int] | None],
        *,
        min_age_s: float,
    ) -> list[str]:
        raise NotImplementedError("the sweep's decisions are tested on MongoValidationStore")

    async def latest_split_key(self, dataset_id: str, *, before: int) -> str | None:
        passed = [
            r
            for r in self.reports.values()
            if r.dataset_id == dataset_id and r.version < before and r.passed
        ]
        return max(passed, key=lambda r: r.version).split_key if passed else None
