"""In-memory stand-ins for ingestion's store and object store (unit tests only)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime
from typing import Any

from screwops_contracts import Event
from screwops_contracts.datasets import ManifestImage
from screwops_errors import IntegrityError, InvalidInputError, NotFoundError
from screwops_ingestion.store import Refusal, VersionRecord
from screwops_storage import StoredObject


class FakeStore:
    def __init__(self) -> None:
        self.images: dict[str, ManifestImage] = {}
        self.refusals: dict[str, Refusal] = {}
        self.versions: dict[str, VersionRecord] = {}
        self.staged_images: dict[str, dict[str, ManifestImage]] = {}

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

    async def create_version(self, record: VersionRecord) -> bool:
        if record.id in self.versions:
            return False
        self.versions[record.id] = record
        return True

    async def mark_published(self, record: VersionRecord) -> None:
        self.versions[record.id] = replace(self.versions[record.id], published=True)

    async def unpublished(self) -> list[VersionRecord]:
        return [v for v in self.versions.values() if not v.published]

    async def stage(self, dataset_id: str, images: list[ManifestImage]) -> None:
        self.staged_images.setdefault(dataset_id, {}).update({i.sha256: i for i in images})

    async def staged(self, dataset_id: str) -> list[ManifestImage]:
        return list(self.staged_images.get(dataset_id, {}).values())

    async def unstage(self, dataset_id: str, shas: list[str]) -> None:
        for sha in shas:
            self.staged_images.get(dataset_id, {}).pop(sha, None)


class FakeObjects:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.puts = 0

    async def put_content(
        self,
        bucket: str,
        data: bytes,
        *,
        prefix: str,
        content_type: str = "",
        check_existing: bool = True,
    ) -> StoredObject:
        sha = hashlib.sha256(data).hexdigest()
        return await self.put_named(bucket, f"{prefix}/{sha[:2]}/{sha}", data)

    async def put_named(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ""
    ) -> StoredObject:
        self.puts += 1
        self.objects[(bucket, key)] = data
        return StoredObject(key, hashlib.sha256(data).hexdigest(), len(data))

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes:
        data = self.objects.get((bucket, key))
        if data is None:
            raise NotFoundError(key)
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(key)
        return data

    async def read_external(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        data = self.objects.get((bucket, key))
        if data is None:
            raise NotFoundError(key)
        if len(data) > max_bytes:
            raise InvalidInputError(f"{key} is {len(data)} bytes, over the limit of {max_bytes}")
        return data


class Published(list[Event[Any]]):
    """Collects what the service publishes."""

    async def __call__(self, event: Event[Any]) -> None:
        self.append(event)
