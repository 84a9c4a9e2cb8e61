"""Ingestion's metadata in MongoDB: images, dataset versions, refusals, staged bucket drops and
the drop keys already read.

Ingestion owns these collections; no other service reads them. Every write is idempotent (keyed
by content or by a deterministic id). A version number is claimed before its manifest is written:
the claim is the version's document, inserted under the unique ``(dataset_id, version)`` index in
state ``reserved`` with a claim id, so one claimant alone owns the number and the manifest key
derived from it. The claimant completes it, by compare-and-swap on that claim id, with the
manifest's digest and its ``dataset.ingested`` pending in its outbox (:mod:`screwops_bus.outbox`),
so a failed publish or a crash between completing a version and publishing it is repaired by the
service's outbox relay. A claim that is never completed (its claimant crashed) is marked
``abandoned`` once it is older than the service's claim timeout, and its number is skipped.
Readers see complete versions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import UpdateOne
from screwops_bus import (
    OUTBOX,
    PENDING,
    Announcement,
    adopt_unannounced,
    mark_sent,
    pending_in,
    pending_index,
)
from screwops_contracts import DatasetIngested
from screwops_contracts.datasets import ManifestImage
from screwops_errors import AlreadyExistsError
from screwops_storage import IndexSpec, StoredObject, bulk_write, ensure_indexes, mongo_errors

VERSIONS = "dataset_versions"
OUTBOXES = (VERSIONS,)
"""The collections whose documents hold announcements (see :mod:`screwops_bus.outbox`)."""

INDEXES = (
    IndexSpec("dataset_versions", (("dataset_id", 1), ("version", 1)), unique=True),
    IndexSpec("refusals", (("dataset_id", 1), ("at", 1))),
    IndexSpec("staged_drops", (("dataset_id", 1),)),
    IndexSpec("drop_keys", (("dataset_id", 1),)),
    pending_index(VERSIONS),
)


class ClaimState(StrEnum):
    """Where a version's claim stands; documents from before claims have no state and are
    complete."""

    RESERVED = "reserved"
    COMPLETE = "complete"
    ABANDONED = "abandoned"


_COMPLETE = {"state": {"$nin": [ClaimState.RESERVED.value, ClaimState.ABANDONED.value]}}
"""The filter of versions readers may see."""


@dataclass(frozen=True)
class Claim:
    """A dataset's version number as claimed by one ingest, whatever became of it."""

    dataset_id: str
    version: int
    id: str
    state: ClaimState
    claimed_at: datetime

    @property
    def document_id(self) -> str:
        return f"{self.dataset_id}@v{self.version}"


@dataclass(frozen=True)
class VersionRecord:
    """One immutable dataset version and the event that announces it."""

    dataset_id: str
    version: int
    manifest_key: str
    manifest_sha256: str
    image_count: int
    added_count: int
    event: DatasetIngested
    created_at: datetime
    traceparent: str = ""
    """The trace of the request that made the version, so the event joins it even when the
    outbox relay publishes it (W3C ``traceparent``; "" outside a trace)."""
    pending: tuple[Announcement, ...] = ()
    """Its ``dataset.ingested`` until Kafka acknowledged it."""

    @property
    def announcement(self) -> Announcement:
        return Announcement(self.event, self.traceparent)

    @property
    def id(self) -> str:
        return f"{self.dataset_id}@v{self.version}"


@dataclass(frozen=True)
class Refusal:
    """A file that was not ingested, and exactly why."""

    id: str
    dataset_id: str
    filename: str
    sha256: str | None
    reason: str
    source: str
    at: datetime


class Objects(Protocol):
    """The part of :class:`screwops_storage.ObjectStore` ingestion uses."""

    async def put_content(
        self,
        bucket: str,
        data: bytes,
        *,
        prefix: str,
        content_type: str = ...,
        check_existing: bool = ...,
    ) -> StoredObject: ...

    async def put_once(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ...
    ) -> StoredObject: ...

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes: ...

    async def read_external(self, bucket: str, key: str, *, max_bytes: int) -> bytes: ...

    async def list_keys(self, bucket: str, prefix: str) -> list[str]: ...


class IngestionStore(Protocol):
    """What the ingestion service needs from its database."""

    async def ensure_indexes(self) -> None: ...

    async def record_images(self, images: list[ManifestImage], *, at: datetime) -> None: ...

    async def record_refusals(self, refusals: list[Refusal]) -> None: ...

    async def latest_version(self, dataset_id: str) -> VersionRecord | None: ...

    async def get_version(self, dataset_id: str, version: int) -> VersionRecord | None: ...

    async def list_versions(self, *, offset: int, limit: int) -> list[VersionRecord]: ...

    async def newest_claim(self, dataset_id: str) -> Claim | None:
        """The dataset's highest-numbered version, complete or not."""
        ...

    async def claim_version(self, claim: Claim) -> bool:
        """Reserve ``claim.version``; False when another ingest claimed that number first."""
        ...

    async def complete_version(self, record: VersionRecord, claim: Claim) -> bool:
        """Complete the version under ``claim``, its event pending in its outbox; False when
        the claim is no longer reserved under that id (it was abandoned as stale)."""
        ...

    async def abandon_version(self, claim: Claim) -> bool:
        """Give up a reserved claim, so the next ingest skips its number; False when it is no
        longer reserved under that id (completed, or abandoned already)."""
        ...

    async def mark_published(self, record: VersionRecord) -> None: ...

    async def stage(self, dataset_id: str, images: list[ManifestImage]) -> None: ...

    async def staged(self, dataset_id: str) -> list[ManifestImage]: ...

    async def unstage(self, dataset_id: str, shas: list[str]) -> None: ...

    async def mark_read(self, dataset_id: str, key: str) -> None: ...

    async def read_keys(self, dataset_id: str) -> set[str]: ...


class MongoIngestionStore:
    """:class:`IngestionStore` on motor; works on FerretDB v1 and MongoDB alike."""

    def __init__(self, db: AsyncIOMotorDatabase[Any]) -> None:
        self._db = db

    async def ensure_indexes(self) -> None:
        await ensure_indexes(self._db, INDEXES)

    async def record_images(self, images: list[ManifestImage], *, at: datetime) -> None:
        if not images:
            return
        await bulk_write(
            self._db.images,
            [
                UpdateOne(
                    {"_id": image.sha256},
                    {
                        "$setOnInsert": {
                            "key": image.key,
                            "width": image.width,
                            "height": image.height,
                            "format": image.format,
                            "first_seen_at": at,
                        }
                    },
                    upsert=True,
                )
                for image in images
            ],
        )

    async def record_refusals(self, refusals: list[Refusal]) -> None:
        if not refusals:
            return
        await bulk_write(
            self._db.refusals,
            [
                UpdateOne(
                    {"_id": r.id},
                    {
                        "$set": {"at": r.at},
                        "$setOnInsert": {
                            "dataset_id": r.dataset_id,
                            "filename": r.filename,
                            "sha256": r.sha256,
                            "reason": r.reason,
                            "source": r.source,
                        },
                    },
                    upsert=True,
                )
                for r in refusals
            ],
        )

    async def latest_version(self, dataset_id: str) -> VersionRecord | None:
        docs = await self._newest({"dataset_id": dataset_id, **_COMPLETE})
        return _record(docs[0]) if docs else None

    async def get_version(self, dataset_id: str, version: int) -> VersionRecord | None:
        with mongo_errors():
            doc = await self._db.dataset_versions.find_one(
                {"_id": f"{dataset_id}@v{version}", **_COMPLETE}
            )
        return _record(doc) if doc else None

    async def list_versions(self, *, offset: int, limit: int) -> list[VersionRecord]:
        with mongo_errors():
            docs = (
                await self._db.dataset_versions.find(_COMPLETE)
                .sort([("dataset_id", 1), ("version", 1)])
                .skip(offset)
                .limit(limit)
                .to_list(limit)
            )
        return [_record(d) for d in docs]

    async def newest_claim(self, dataset_id: str) -> Claim | None:
        docs = await self._newest({"dataset_id": dataset_id})
        return _claim(docs[0]) if docs else None

    async def claim_version(self, claim: Claim) -> bool:
        try:
            with mongo_errors():
                await self._db.dataset_versions.insert_one(
                    {
                        "_id": claim.document_id,
                        "dataset_id": claim.dataset_id,
                        "version": claim.version,
                        "state": ClaimState.RESERVED.value,
                        "claim": claim.id,
                        "claimed_at": claim.claimed_at,
                    }
                )
        except AlreadyExistsError:
            return False
        return True

    async def complete_version(self, record: VersionRecord, claim: Claim) -> bool:
        with mongo_errors():
            result = await self._db.dataset_versions.update_one(
                {"_id": record.id, "state": ClaimState.RESERVED.value, "claim": claim.id},
                {
                    "$set": {
                        "state": ClaimState.COMPLETE.value,
                        "manifest_key": record.manifest_key,
                        "manifest_sha256": record.manifest_sha256,
                        "image_count": record.image_count,
                        "added_count": record.added_count,
                        "event": record.event.model_dump(mode="json"),
                        "created_at": record.created_at,
                        "traceparent": record.traceparent,
                        OUTBOX: [record.announcement.document()],
                        PENDING: True,
                    }
                },
            )
        return result.matched_count == 1

    async def abandon_version(self, claim: Claim) -> bool:
        with mongo_errors():
            result = await self._db.dataset_versions.update_one(
                {"_id": claim.document_id, "state": ClaimState.RESERVED.value, "claim": claim.id},
                {"$set": {"state": ClaimState.ABANDONED.value}},
            )
        return result.matched_count == 1

    async def _newest(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        with mongo_errors():
            return (
                await self._db.dataset_versions.find(query).sort("version", -1).limit(1).to_list(1)
            )

    async def mark_published(self, record: VersionRecord) -> None:
        await mark_sent(self._db[VERSIONS], record.id, record.announcement.id)

    async def adopt_unannounced(self) -> int:
        """Queue the ``dataset.ingested`` of versions written before the outbox and never
        acknowledged (``published: false``) for the relay; how many (see
        :func:`screwops_bus.adopt_unannounced`). Such a version kept its event whole."""

        async def owed(doc: dict[str, Any]) -> Announcement:
            event = DatasetIngested.model_validate(doc["event"])
            return Announcement(event, doc.get("traceparent", ""))

        return await adopt_unannounced(self._db[VERSIONS], owed)

    async def stage(self, dataset_id: str, images: list[ManifestImage]) -> None:
        if not images:
            return
        await bulk_write(
            self._db.staged_drops,
            [
                UpdateOne(
                    {"_id": f"{dataset_id}:{image.sha256}"},
                    {
                        "$set": {
                            "dataset_id": dataset_id,
                            "image": image.model_dump(mode="json"),
                        }
                    },
                    upsert=True,
                )
                for image in images
            ],
        )

    async def staged(self, dataset_id: str) -> list[ManifestImage]:
        with mongo_errors():
            docs = await self._db.staged_drops.find({"dataset_id": dataset_id}).to_list(None)
        return [ManifestImage.model_validate(d["image"]) for d in docs]

    async def unstage(self, dataset_id: str, shas: list[str]) -> None:
        with mongo_errors():
            await self._db.staged_drops.delete_many(
                {"_id": {"$in": [f"{dataset_id}:{sha}" for sha in shas]}}
            )

    async def mark_read(self, dataset_id: str, key: str) -> None:
        with mongo_errors():
            await self._db.drop_keys.update_one(
                {"_id": key}, {"$set": {"dataset_id": dataset_id}}, upsert=True
            )

    async def read_keys(self, dataset_id: str) -> set[str]:
        with mongo_errors():
            docs = await self._db.drop_keys.find({"dataset_id": dataset_id}, {"_id": 1}).to_list(
                None
            )
        return {str(d["_id"]) for d in docs}


def _claim(doc: dict[str, Any]) -> Claim:
    return Claim(
        dataset_id=doc["dataset_id"],
        version=doc["version"],
        id=doc.get("claim", ""),
        state=ClaimState(doc.get("state", ClaimState.COMPLETE.value)),
        claimed_at=doc.get("claimed_at") or doc["created_at"],
    )


def _record(doc: dict[str, Any]) -> VersionRecord:
    return VersionRecord(
        dataset_id=doc["dataset_id"],
        version=doc["version"],
        manifest_key=doc["manifest_key"],
        manifest_sha256=doc["manifest_sha256"],
        image_count=doc["image_count"],
        added_count=doc["added_count"],
        event=DatasetIngested.model_validate(doc["event"]),
        created_at=doc["created_at"],
        traceparent=doc.get("traceparent", ""),
        pending=pending_in(doc),
    )
