"""In-memory stand-ins for ingestion's store and object store (unit tests only)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from screwops_bus import Pending
from screwops_contracts.datasets import ManifestImage
from screwops_ingestion.store import VERSIONS, Claim, ClaimState, Refusal, VersionRecord


class FakeStore:
    """The store, and the outbox its versions keep (:class:`screwops_bus.Outbox`)."""

    def __init__(self) -> None:
        self.images: dict[str, ManifestImage] = {}
        self.refusals: dict[str, Refusal] = {}
        self.versions: dict[str, VersionRecord] = {}
        """The complete versions."""
        self.claims: dict[str, Claim] = {}
        """Every version number claimed, and the state of its claim."""
        self.staged_images: dict[str, dict[str, ManifestImage]] = {}
        self.read: dict[str, set[str]] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def record_images(self, images: list[ManifestImage], *, at: datetime) -> None:
        for image in images:
            self.images.setdefault(image.sha256, image)

    async def record_refusals(self, refusals: list[Refusal]) -> None:
        self.refusals.update({r.id: r for r in refusals})

    async def latest_version(self, dataset_id: str) -> VersionRecord | None:
        mine = [v for v in self.versions.values() if v.dataset_id == dataset_id]
        return max(mine, key=lambda v: v.version, default=None)

    async def get_version(self, dataset_id: str, version: int) -> VersionRecord | None:
        return self.versions.get(f"{dataset_id}@v{version}")

    async def list_versions(self, *, offset: int, limit: int) -> list[VersionRecord]:
        ordered = sorted(self.versions.values(), key=lambda v: (v.dataset_id, v.version))
        return ordered[offset : offset + limit]

    async def newest_claim(self, dataset_id: str) -> Claim | None:
        mine = [c for c in self.claims.values() if c.dataset_id == dataset_id]
        return max(mine, key=lambda c: c.version, default=None)

    async def claim_version(self, claim: Claim) -> bool:
        if claim.document_id in self.claims:
            return False
        self.claims[claim.document_id] = claim
        return True

    async def complete_version(self, record: VersionRecord, claim: Claim) -> bool:
        if self.claims.get(record.id) != claim:
            return False
        self.claims[record.id] = replace(claim, state=ClaimState.COMPLETE)
        self.versions[record.id] = replace(record, pending=(record.announcement,))
        return True

    async def abandon_version(self, claim: Claim) -> bool:
        if self.claims.get(claim.document_id) != claim:
            return False
        self.claims[claim.document_id] = replace(claim, state=ClaimState.ABANDONED)
        return True

    async def mark_published(self, record: VersionRecord) -> None:
        self.versions[record.id] = replace(self.versions[record.id], pending=())

    async def pending(self) -> list[Pending]:
        return [Pending(VERSIONS, v.id, a) for v in self.versions.values() for a in v.pending]

    async def sent(self, pending: Pending) -> None:
        await self.mark_published(self.versions[pending.document_id])

    async def stage(self, dataset_id: str, images: list[ManifestImage]) -> None:
        self.staged_images.setdefault(dataset_id, {}).update({i.sha256: i for i in images})

    async def staged(self, dataset_id: str) -> list[ManifestImage]:
        return list(self.staged_images.get(dataset_id, {}).values())

    async def unstage(self, dataset_id: str, shas: list[str]) -> None:
        for sha in shas:
            self.staged_images.get(dataset_id, {}).pop(sha, None)

    async def mark_read(self, dataset_id: str, key: str) -> None:
        self.read.setdefault(dataset_id, set()).add(key)

    async def read_keys(self, dataset_id: str) -> set[str]:
        return set(self.read.get(dataset_id, set()))
