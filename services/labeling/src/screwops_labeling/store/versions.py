"""Labeling's versions in MongoDB: the versions to label, their images, labels, reservations.

- ``label_versions``: one document per dataset version (``<dataset>@v<n>``), from the
  ``dataset.ingested`` event that announced it (kept whole, as the cause of ``dataset.labeled``)
  to its end: ``labeled`` when every image got a label, ``closed`` when an operator closed it.
  An end is claimed first (``ending``, by the first caller only), so the version's
  ``labels.json`` is written from that one end before the version ends; the update that ends it
  also leaves its ``dataset.labeled`` pending in its ``outbox`` (:mod:`screwops_bus.outbox`) for
  the service's outbox relay, should the publish that follows fail.
- ``version_images``: the images of each version, with a ``labeled`` flag copied from ``labels``
  so the unlabeled ones are one indexed query away (FerretDB has no ``$lookup``).
- ``labels``: the current label of each image of a dataset (``<dataset>/<sha256>``). Labels are
  per dataset, not per version, so a new version asks only for its new images.
- ``reservations``: which annotator holds which unlabeled image, until when.

A label is written before its ``labeled`` flags; a crash between the two leaves a flag behind its
label, never ahead of it, and :meth:`MongoVersionStore.unlabeled` and ``reserve_next`` repair such
flags when they meet them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ASCENDING, UpdateOne
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
from screwops_contracts.datasets import ImageLabel
from screwops_errors import AlreadyExistsError
from screwops_storage import Document, IndexSpec, bulk_write, mongo_errors

VERSIONS = "label_versions"
IMAGES = "version_images"
LABELS = "labels"
RESERVATIONS = "reservations"

INDEXES = (
    IndexSpec(VERSIONS, (("dataset_id", 1), ("version", 1)), unique=True),
    IndexSpec(
        IMAGES,
        (
            ("dataset_id", 1),
            ("version", 1),
            ("labeled", 1),
            ("sha256", 1),
        ),
    ),
    IndexSpec(IMAGES, (("dataset_id", 1), ("sha256", 1))),
    IndexSpec(LABELS, (("sha256", 1),)),
    IndexSpec(RESERVATIONS, (("dataset_id", 1), ("annotator", 1))),
    pending_index(VERSIONS),
)

# Unlabeled images looked at per round trip while looking for one to reserve.
_BATCH = 100
_ENDING = "ending"


class VersionStatus(StrEnum):
    """Where a version is in labeling: open for labels, or ended one of two ways."""

    OPEN = "open"
    LABELED = "labeled"  # every image has a label
    CLOSED = "closed"  # an operator ended it; unlabeled images were excluded


@dataclass(frozen=True)
class VersionRecord:
    """One dataset version as labeling sees it, and the event that announced it."""

    dataset_id: str
    version: int
    manifest_key: str
    image_count: int
    event: DatasetIngested
    opened_at: datetime
    status: VersionStatus = VersionStatus.OPEN
    excluded: tuple[str, ...] = ()
    closed_by: str | None = None
    close_reason: str | None = None
    ended_at: datetime | None = None
    traceparent: str = ""
    """The trace of the ``dataset.ingested`` delivery that opened the version, so
    ``dataset.labeled`` joins the run's trace even when a person's last label ends the version
    (W3C ``traceparent``; "" outside a trace)."""
    ending: VersionEnd | None = None
    """The end claimed for a version still open: its ``labels.json`` is being written."""
    pending: tuple[Announcement, ...] = ()
    """Its ``dataset.labeled`` from the end until Kafka acknowledged it."""

    @property
    def id(self) -> str:
        return version_id(self.dataset_id, self.version)


@dataclass(frozen=True)
class VersionImage:
    """One image of a version: what it is called and where its bytes are."""

    dataset_id: str
    version: int
    sha256: str
    key: str
    filename: str


@dataclass(frozen=True)
class VersionEnd:
    """How a version ended: labeled, or closed by an operator with some images excluded."""

    status: Literal[VersionStatus.LABELED, VersionStatus.CLOSED]
    at: datetime
    excluded: tuple[str, ...] = ()
    closed_by: str | None = None
    reason: str | None = None


def version_id(dataset_id: str, version: int) -> str:
    """The id of a version's record, the same one ingestion gives it."""
    return f"{dataset_id}@v{version}"


class VersionStore(Protocol):
    """What labeling a dataset version needs from the database."""

    async def record_version(self, record: VersionRecord, images: Sequence[VersionImage]) -> None:
        """Record a version's images, then the version; recording it again changes nothing.

        Images the dataset already has a label for count as labeled.
        """

    async def versions(self, dataset_id: str) -> list[VersionRecord]:
        """Every version of the dataset, oldest first; empty for an unknown dataset."""

    async def get_version(self, dataset_id: str, version: int) -> VersionRecord | None:
        """One version, or None if it was never recorded."""

    async def open_versions(self) -> list[VersionRecord]:
        """Every dataset's open versions, by dataset then version."""

    async def claim_end(self, dataset_id: str, version: int, end: VersionEnd) -> None:
        """Claim ``end`` for an open version; one already claimed keeps its claim (first one
        wins), so its ``labels.json`` is written for one end only."""

    async def end_version(
        self, dataset_id: str, version: int, end: VersionEnd, announcement: Announcement
    ) -> None:
        """End an open version as claimed, with ``announcement`` pending in its outbox, in one
        update; one that already ended keeps its end and its announcement."""

    async def mark_published(self, dataset_id: str, version: int, announcement_id: str) -> None:
        """Remove the announcement from the version's outbox: Kafka acknowledged it."""

    async def adopt_unannounced(
        self, announcement_of: Callable[[VersionRecord], Awaitable[Announcement | None]]
    ) -> int:
        """Queue, in their outboxes, what the versions written before the outbox and never
        acknowledged (``published: false``) owe: ``announcement_of`` each (None: nothing yet);
        once per version (see :func:`screwops_bus.adopt_unannounced`). How many were queued."""

    async def images(self, dataset_id: str, versions: Iterable[int]) -> list[VersionImage]:
        """The images of the given versions, sorted by version then digest."""

    async def find_image(
        self, dataset_id: str, sha256: str, versions: Iterable[int]
    ) -> VersionImage | None:
        """The image in the oldest of the given versions that holds it, or None."""

    async def unlabeled_count(self, dataset_id: str, version: int) -> int:
        """Images of the version without a label (at most: flags may lag their labels)."""

    async def unlabeled(self, dataset_id: str, version: int) -> list[str]:
        """The digests of the version's images without a label, exactly, sorted."""

    async def reserve_next(
        self, dataset_id: str, version: int, annotator: str, *, now: datetime, until: datetime
    ) -> VersionImage | None:
        """Reserve an unlabeled image of the version for ``annotator`` until ``until``.

        The annotator's own live reservation comes first, so asking twice gives the same image;
        otherwise the first unlabeled image (by digest) nobody else holds. None when there is none.
        """

    async def labels(self, dataset_id: str, shas: Iterable[str]) -> dict[str, ImageLabel]:
        """The dataset's current labels of these images, by digest (unlabeled ones absent)."""

    async def labels_of_image(self, sha256: str) -> dict[str, ImageLabel]:
        """Every dataset's label of one image, by dataset id."""

    async def put_labels(
        self, dataset_id: str, labels: Sequence[ImageLabel], *, replace: bool
    ) -> None:
        """Store labels for the dataset and release the images' reservations.

        With ``replace`` a label replaces the image's current one; without, an image keeps the
        label it has (layout labels never overwrite a person's).
        """


class MongoVersionStore:
    """:class:`VersionStore` on motor; works on FerretDB v1 and MongoDB alike."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self._db = db

    async def record_version(self, record: VersionRecord, images: Sequence[VersionImage]) -> None:
        # The version document goes last: once it exists, all of its images do.
        if images:
            await bulk_write(
                self._db[IMAGES],
                [
                    UpdateOne(
                        {"_id": _image_id(image)},
                        {
                            "$setOnInsert": {
                                "dataset_id": image.dataset_id,
                                "version": image.version,
                                "sha256": image.sha256,
                                "key": image.key,
                                "filename": image.filename,
                                "labeled": False,
                            }
                        },
                        upsert=True,
                    )
                    for image in images
                ],
            )
            await self._labeled_among(record.dataset_id, [image.sha256 for image in images])
        with mongo_errors():
            await self._db[VERSIONS].update_one(
                {"_id": record.id}, {"$setOnInsert": _version_document(record)}, upsert=True
            )

    async def versions(self, dataset_id: str) -> list[VersionRecord]:
        with mongo_errors():
            docs = (
                await self._db[VERSIONS]
                .find({"dataset_id": dataset_id})
                .sort("version", ASCENDING)
                .to_list(None)
            )
        return [_version(doc) for doc in docs]

    async def get_version(self, dataset_id: str, version: int) -> VersionRecord | None:
        with mongo_errors():
            doc = await self._db[VERSIONS].find_one({"_id": version_id(dataset_id, version)})
        return _version(doc) if doc else None

    async def open_versions(self) -> list[VersionRecord]:
        with mongo_errors():
            docs = await self._db[VERSIONS].find({"status": VersionStatus.OPEN.value}).to_list(None)
        return sorted((_version(doc) for doc in docs), key=lambda r: (r.dataset_id, r.version))

    async def claim_end(self, dataset_id: str, version: int, end: VersionEnd) -> None:
        with mongo_errors():
            await self._db[VERSIONS].update_one(
                {
                    "_id": version_id(dataset_id, version),
                    "status": VersionStatus.OPEN.value,
                    _ENDING: {"$exists": False},
                },
                {"$set": {_ENDING: _end_document(end)}},
            )

    async def end_version(
        self, dataset_id: str, version: int, end: VersionEnd, announcement: Announcement
    ) -> None:
        with mongo_errors():
            await self._db[VERSIONS].update_one(
                {"_id": version_id(dataset_id, version), "status": VersionStatus.OPEN.value},
                {
                    "$set": {
                        "status": end.status.value,
                        "ended_at": end.at,
                        "excluded": list(end.excluded),
                        "closed_by": end.closed_by,
                        "close_reason": end.reason,
                        OUTBOX: [announcement.document()],
                        PENDING: True,
                    },
                    "$unset": {_ENDING: ""},
                },
            )

    async def mark_published(self, dataset_id: str, version: int, announcement_id: str) -> None:
        await mark_sent(self._db[VERSIONS], version_id(dataset_id, version), announcement_id)

    async def adopt_unannounced(
        self, announcement_of: Callable[[VersionRecord], Awaitable[Announcement | None]]
    ) -> int:
        async def owed(doc: Document) -> Announcement | None:
            return await announcement_of(_version(doc))

        return await adopt_unannounced(self._db[VERSIONS], owed)

    async def images(self, dataset_id: str, versions: Iterable[int]) -> list[VersionImage]:
        with mongo_errors():
            docs = (
                await self._db[IMAGES]
                .find({"dataset_id": dataset_id, "version": {"$in": list(versions)}})
                .sort([("version", ASCENDING), ("sha256", ASCENDING)])
                .to_list(None)
            )
        return [_image(doc) for doc in docs]

    async def find_image(
        self, dataset_id: str, sha256: str, versions: Iterable[int]
    ) -> VersionImage | None:
        with mongo_errors():
            docs = (
                await self._db[IMAGES]
                .find(
                    {
                        "dataset_id": dataset_id,
                        "sha256": sha256,
                        "version": {"$in": list(versions)},
                    }
                )
                .sort("version", ASCENDING)
                .limit(1)
                .to_list(1)
            )
        return _image(docs[0]) if docs else None

    async def unlabeled_count(self, dataset_id: str, version: int) -> int:
        with mongo_errors():
            return await self._db[IMAGES].count_documents(
                {"dataset_id": dataset_id, "version": version, "labeled": False}
            )

    async def unlabeled(self, dataset_id: str, version: int) -> list[str]:
        with mongo_errors():
            docs = (
                await self._db[IMAGES]
                .find(
                    {"dataset_id": dataset_id, "version": version, "labeled": False},
                    {"sha256": 1},
                )
                .to_list(None)
            )
        flagged = {doc["sha256"] for doc in docs}
        return sorted(flagged - await self._labeled_among(dataset_id, flagged))

    async def reserve_next(
        self, dataset_id: str, version: int, annotator: str, *, now: datetime, until: datetime
    ) -> VersionImage | None:
        unlabeled = {"dataset_id": dataset_id, "version": version, "labeled": False}
        with mongo_errors():
            held = (
                await self._db[RESERVATIONS]
                .find({"dataset_id": dataset_id, "annotator": annotator, "until": {"$gt": now}})
                .to_list(None)
            )
        if held:
            with mongo_errors():
                own = (
                    await self._db[IMAGES]
                    .find(unlabeled | {"sha256": {"$in": [doc["sha256"] for doc in held]}})
                    .sort("sha256", ASCENDING)
                    .to_list(None)
                )
            if image := await self._claim_first(own, annotator, now=now, until=until):
                return image
        last = ""
        while True:
            with mongo_errors():
                batch = (
                    await self._db[IMAGES]
                    .find(unlabeled | {"sha256": {"$gt": last}})
                    .sort("sha256", ASCENDING)
                    .limit(_BATCH)
                    .to_list(_BATCH)
                )
            if not batch:
                return None
            if image := await self._claim_first(batch, annotator, now=now, until=until):
                return image
            last = batch[-1]["sha256"]

    async def labels(self, dataset_id: str, shas: Iterable[str]) -> dict[str, ImageLabel]:
        ids = [_dataset_image_id(dataset_id, sha) for sha in shas]
        if not ids:
            return {}
        with mongo_errors():
            docs = await self._db[LABELS].find({"_id": {"$in": ids}}).to_list(None)
        return {doc["sha256"]: _label(doc) for doc in docs}

    async def labels_of_image(self, sha256: str) -> dict[str, ImageLabel]:
        with mongo_errors():
            docs = await self._db[LABELS].find({"sha256": sha256}).to_list(None)
        return {doc["dataset_id"]: _label(doc) for doc in docs}

    async def put_labels(
        self, dataset_id: str, labels: Sequence[ImageLabel], *, replace: bool
    ) -> None:
        if not labels:
            return
        operator = "$set" if replace else "$setOnInsert"
        ids = [_dataset_image_id(dataset_id, label.sha256) for label in labels]
        await bulk_write(
            self._db[LABELS],
            [
                UpdateOne(
                    {"_id": _id},
                    {operator: {"dataset_id": dataset_id, **_label_document(label)}},
                    upsert=True,
                )
                for _id, label in zip(ids, labels, strict=True)
            ],
        )
        await self._flag_labeled(dataset_id, [label.sha256 for label in labels])
        with mongo_errors():
            await self._db[RESERVATIONS].delete_many({"_id": {"$in": ids}})

    async def _labeled_among(self, dataset_id: str, shas: Iterable[str]) -> set[str]:
        """Which of ``shas`` have a label, with their ``labeled`` flags brought up to date."""
        labeled = set(await self.labels(dataset_id, shas))
        if labeled:
            await self._flag_labeled(dataset_id, labeled)
        return labeled

    async def _flag_labeled(self, dataset_id: str, shas: Iterable[str]) -> None:
        with mongo_errors():
            await self._db[IMAGES].update_many(
                {"dataset_id": dataset_id, "sha256": {"$in": list(shas)}, "labeled": False},
                {"$set": {"labeled": True}},
            )

    async def _claim_first(
        self, candidates: list[Document], annotator: str, *, now: datetime, until: datetime
    ) -> VersionImage | None:
        """Reserve the first candidate that is still unlabeled and free (or already ours)."""
        if not candidates:
            return None
        dataset_id = candidates[0]["dataset_id"]
        labeled = await self._labeled_among(dataset_id, [doc["sha256"] for doc in candidates])
        for doc in candidates:
            if doc["sha256"] in labeled:
                continue
            try:
                with mongo_errors():
                    await self._db[RESERVATIONS].update_one(
                        {
                            "_id": _dataset_image_id(dataset_id, doc["sha256"]),
                            "$or": [{"until": {"$lte": now}}, {"annotator": annotator}],
                        },
                        {
                            "$set": {
                                "dataset_id": dataset_id,
                                "sha256": doc["sha256"],
                                "annotator": annotator,
                                "until": until,
                            }
                        },
                        upsert=True,
                    )
            except AlreadyExistsError:
                continue  # someone else holds it: the upsert collided with their reservation
            return _image(doc)
        return None


def _image_id(image: VersionImage) -> str:
    return f"{version_id(image.dataset_id, image.version)}/{image.sha256}"


def _dataset_image_id(dataset_id: str, sha256: str) -> str:
    return f"{dataset_id}/{sha256}"


def _version_document(record: VersionRecord) -> Document:
    return {
        "dataset_id": record.dataset_id,
        "version": record.version,
        "manifest_key": record.manifest_key,
        "image_count": record.image_count,
        "event": record.event.model_dump(mode="json"),
        "opened_at": record.opened_at,
        "status": record.status.value,
        "excluded": list(record.excluded),
        "closed_by": record.closed_by,
        "close_reason": record.close_reason,
        "ended_at": record.ended_at,
        "traceparent": record.traceparent,
    }


def _end_document(end: VersionEnd) -> Document:
    return {
        "status": end.status.value,
        "at": end.at,
        "excluded": list(end.excluded),
        "closed_by": end.closed_by,
        "reason": end.reason,
    }


def _end(doc: Document) -> VersionEnd:
    return VersionEnd(
        VersionStatus.CLOSED if doc["status"] == VersionStatus.CLOSED else VersionStatus.LABELED,
        at=doc["at"],
        excluded=tuple(doc.get("excluded", ())),
        closed_by=doc.get("closed_by"),
        reason=doc.get("reason"),
    )


def _version(doc: Document) -> VersionRecord:
    return VersionRecord(
        dataset_id=doc["dataset_id"],
        version=doc["version"],
        manifest_key=doc["manifest_key"],
        image_count=doc["image_count"],
        event=DatasetIngested.model_validate(doc["event"]),
        opened_at=doc["opened_at"],
        status=VersionStatus(doc["status"]),
        excluded=tuple(doc.get("excluded", ())),
        closed_by=doc.get("closed_by"),
        close_reason=doc.get("close_reason"),
        ended_at=doc.get("ended_at"),
        traceparent=doc.get("traceparent", ""),
        ending=_end(doc[_ENDING]) if doc.get(_ENDING) else None,
        pending=pending_in(doc),
    )


def _image(doc: Document) -> VersionImage:
    return VersionImage(
        dataset_id=doc["dataset_id"],
        version=doc["version"],
        sha256=doc["sha256"],
        key=doc["key"],
        filename=doc["filename"],
    )


def _label_document(label: ImageLabel) -> Document:
    # Datetimes stay BSON dates (sortable, comparable); the rest is the JSON form.
    return label.model_dump(mode="json") | {"labeled_at": label.labeled_at}


def _label(doc: Document) -> ImageLabel:
    return ImageLabel.model_validate(
        {field: doc[field] for field in ImageLabel.model_fields if field in doc}
    )
