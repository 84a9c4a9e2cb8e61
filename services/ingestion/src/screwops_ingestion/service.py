"""Ingestion's domain logic: files in, an immutable dataset version and ``dataset.ingested`` out.

Three entry points (gRPC upload, a server-side import of a directory or zip, MinIO bucket drops)
share one path: every file is decoded and checked, stored content-addressed in MinIO, recorded in
MongoDB, and the accepted images are grouped with the dataset's earlier ones into a new version.
Bad files are refused one by one with their reason; the rest of the batch goes in. Offering the
same files again creates nothing new.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Literal

from screwops_bus import announce_now
from screwops_contracts import ID_NAMESPACE, DatasetIngested, DatasetIngestedPayload, Event, layouts
from screwops_contracts.datasets import (
    LABEL_WORDS,
    READY_MARKER,
    Bucket,
    Manifest,
    ManifestImage,
    manifest_key,
)
from screwops_contracts.layouts import IncomingFile, LabelMap, Layout
from screwops_contracts.limits import MAX_FILE_PATH_CHARS
from screwops_contracts.minio import BucketNotification
from screwops_errors import InvalidInputError, NotFoundError, PermissionDeniedError
from screwops_imaging import decode, sha256_hex
from screwops_telemetry import traceparent

from screwops_ingestion.config import Rules
from screwops_ingestion.store import (
    Claim,
    ClaimState,
    IngestionStore,
    Objects,
    Refusal,
    VersionRecord,
)

log = logging.getLogger("screwops.ingestion")

Source = Literal["upload", "import", "bucket"]
IMAGE_PREFIX = "raw"
_CLAIM_POLL_S = 0.05
"""How often an ingest looks again at a version number another ingest is completing."""


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REFUSED = "refused"


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one offered file."""

    filename: str
    status: Outcome
    sha256: str = ""
    reason: str = ""


@dataclass(frozen=True)
class IngestResult:
    """The answer to an upload or import: the version (if any) and each file's fate."""

    dataset_id: str
    version: int | None
    created: bool
    files: list[FileOutcome] = field(default_factory=list)

    def count(self, status: Outcome) -> int:
        return sum(1 for f in self.files if f.status == status)


Publish = Callable[[Event[DatasetIngestedPayload]], Awaitable[None]]


@dataclass(frozen=True)
class Batch:
    """Where a batch came from and how its files fared, for the event's counts."""

    source: Source
    offered: int
    refused: int


class IngestionService:
    """Turns offered files into dataset versions (see the module docstring)."""

    def __init__(
        self,
        store: IngestionStore,
        objects: Objects,
        publish: Publish,
        *,
        rules: Rules,
    ) -> None:
        self._store = store
        self._objects = objects
        self._publish = publish
        self._limits = rules.limits
        self._import_roots = [Path(root).resolve() for root in rules.import_roots]
        self._claim_timeout_s = rules.claim_timeout_s
        # One version at a time per dataset in this process; across processes the claim under
        # the unique (dataset_id, version) index decides (see _new_version).
        self._locks: dict[str, asyncio.Lock] = {}

    async def ingest(
        self,
        dataset_id: str,
        files: AsyncIterable[IncomingFile] | Iterable[IncomingFile],
        *,
        source: Source,
    ) -> IngestResult:
        """Check and store every file, then cut a new version if any image is new."""
        _check_dataset_id(dataset_id)
        checked = await self._check_all(files)
        accepted = [image for _, image in checked if image is not None]
        outcomes = [outcome for outcome, _ in checked]
        now = datetime.now(UTC)
        await self._store.record_images(accepted, at=now)
        await self._store.record_refusals(
            [_refusal(dataset_id, o, source, now) for o in outcomes if o.status == Outcome.REFUSED]
        )
        batch = Batch(
            source=source,
            offered=sum(1 for o in outcomes if o.status == Outcome.ACCEPTED),
            refused=sum(1 for o in outcomes if o.status == Outcome.REFUSED),
        )
        version, created, fresh = await self._new_version(dataset_id, accepted, batch)
        results = [
            o if o.status != Outcome.ACCEPTED or o.sha256 in fresh else _duplicate(o)
            for o in _dedupe_batch(outcomes)
        ]
        return IngestResult(dataset_id, version, created, results)

    async def import_path(
        self,
        dataset_id: str,
        path: str,
        layout: Layout,
        label_map: LabelMap | None = None,
    ) -> IngestResult:
        """Import a directory or zip on this server's disk, within the allowed roots.

        ``label_map`` names the labels of class folders outside the known words.

        Raises:
            PermissionDeniedError: no import roots are configured, or the path is outside
                them.
            InvalidInputError: the layout cannot be told or a class folder names no label
                (nothing is imported).
        """
        _check_dataset_id(dataset_id)
        if not self._import_roots:
            raise PermissionDeniedError(
                "no import roots are configured (import_roots), so nothing is importable here: "
                "upload the images, or have an operator name the directories imports may read"
            )
        resolved = await asyncio.to_thread(Path(path).resolve)
        if not any(resolved.is_relative_to(root) for root in self._import_roots):
            raise PermissionDeniedError(f"{path} is outside the import roots")
        source = await asyncio.to_thread(layouts.Source, resolved)
        try:
            files = layouts.read(
                source,
                max_bytes=self._limits.max_bytes,
                layout=layout,
                label_map=label_map,
                max_csv_bytes=self._limits.max_csv_bytes,
            )
            return await self.ingest(dataset_id, files, source="import")
        finally:
            source.close()

    async def on_bucket_drop(self, notification: BucketNotification) -> None:
        """Stage dropped images; the batch becomes a version when ``_READY`` is dropped.

        MinIO keys its notifications by object, so they reach the topic's partitions in any
        order and ``_READY`` can arrive before some of its batch: at ``_READY`` the dataset's
        prefix is listed and whatever no notification brought yet is read then, so the version
        holds everything dropped before the marker.
        """
        for record in notification.records:
            key = record.key
            parts = PurePosixPath(key).parts
            if len(parts) < 2:
                log.warning("ignoring drop %s: expected <dataset>/<file>", key)
                continue
            dataset_id = parts[0]
            if parts[-1] == READY_MARKER:
                await self._close_drop(record.s3.bucket.name, dataset_id)
                continue
            await self._stage_drop(record.s3.bucket.name, key, dataset_id)

    async def get_version(self, dataset_id: str, version: int | None) -> VersionRecord:
        """A version of a dataset (the newest if ``version`` is None)."""
        found = (
            await self._store.latest_version(dataset_id)
            if version is None
            else await self._store.get_version(dataset_id, version)
        )
        if found is None:
            raise NotFoundError(f"dataset {dataset_id!r} has no version {version or ''}".strip())
        return found

    async def list_versions(self, *, offset: int, limit: int) -> list[VersionRecord]:
        return await self._store.list_versions(offset=offset, limit=limit)

    async def find_images(self, dataset_id: str, shas: list[str]) -> list[str]:
        """Those of ``shas`` the dataset's newest version holds: what a client need not send,
        since ingesting them again would only report them as duplicates."""
        _check_dataset_id(dataset_id)
        latest = await self._store.latest_version(dataset_id)
        if latest is None:
            return []
        held = {image.sha256 for image in (await self._manifest(latest)).images}
        return [sha for sha in shas if sha in held]

    async def _check_all(
        self, files: AsyncIterable[IncomingFile] | Iterable[IncomingFile]
    ) -> list[tuple[FileOutcome, ManifestImage | None]]:
        slots = asyncio.Semaphore(self._limits.concurrency)
        tasks: list[asyncio.Task[tuple[FileOutcome, ManifestImage | None]]] = []

        async def one(file: IncomingFile) -> tuple[FileOutcome, ManifestImage | None]:
            try:
                return await self._check_and_store(file)
            finally:
                slots.release()

        async for file in _aiter(files):
            await slots.acquire()
            tasks.append(asyncio.create_task(one(file)))
        return list(await asyncio.gather(*tasks))

    async def _check_and_store(
        self, file: IncomingFile
    ) -> tuple[FileOutcome, ManifestImage | None]:
        if len(file.filename) > MAX_FILE_PATH_CHARS:
            # Refused by its name alone, recorded under the name cut to the limit, so the
            # refusal stays as bounded as a manifest.
            reason = (
                f"filename is {len(file.filename)} characters, over the limit of "
                f"{MAX_FILE_PATH_CHARS}"
            )
            name = file.filename[:MAX_FILE_PATH_CHARS]
            return FileOutcome(name, Outcome.REFUSED, reason=reason), None
        if file.problem is not None:
            return FileOutcome(file.filename, Outcome.REFUSED, reason=file.problem), None
        sha = sha256_hex(file.data)
        try:
            decoded = await asyncio.to_thread(
                decode,
                file.data,
                max_bytes=self._limits.max_bytes,
                max_pixels=self._limits.max_pixels,
            )
        except InvalidInputError as exc:
            return FileOutcome(file.filename, Outcome.REFUSED, sha, exc.message), None
        stored = await self._objects.put_content(
            Bucket.IMAGES,
            file.data,
            prefix=IMAGE_PREFIX,
            content_type=_mime(decoded.format),
            check_existing=False,
        )
        image = ManifestImage(
            sha256=sha,
            key=stored.key,
            filename=file.filename,
            width=decoded.width,
            height=decoded.height,
            format=decoded.format,
            label=file.label,
            defect_type=file.defect_type,
            origin_split=file.origin_split,
        )
        return FileOutcome(file.filename, Outcome.ACCEPTED, sha), image

    async def _new_version(
        self, dataset_id: str, accepted: list[ManifestImage], batch: Batch
    ) -> tuple[int | None, bool, set[str]]:
        """The version the batch lands in, whether it was created, and which images are new.

        The number is claimed in MongoDB before the manifest is written to the key derived from
        it, so two replicas never write the same key. A version is cut only on top of the
        newest one being complete: while another ingest holds the newest number, this one
        waits for it (or abandons it once it is older than the claim timeout), so every version
        holds all the images of the one before it.
        """
        lock = self._locks.setdefault(dataset_id, asyncio.Lock())
        async with lock:
            while True:
                newest = await self._store.newest_claim(dataset_id)
                if newest is not None and newest.state is ClaimState.RESERVED:
                    await self._wait_or_abandon(newest)
                    continue
                latest = await self._store.latest_version(dataset_id)
                previous = await self._manifest(latest) if latest else None
                known = {image.sha256: image for image in previous.images} if previous else {}
                fresh = {i.sha256: i for i in accepted if i.sha256 not in known}
                if not fresh:
                    return (latest.version if latest else None), False, set()
                claim = Claim(
                    dataset_id=dataset_id,
                    version=(newest.version + 1) if newest else 1,
                    id=uuid.uuid4().hex,
                    state=ClaimState.RESERVED,
                    claimed_at=datetime.now(UTC),
                )
                if not await self._store.claim_version(claim):
                    log.info("version %s was claimed by a concurrent import", claim.document_id)
                    continue
                try:
                    record = await self._write_version(
                        claim,
                        sorted([*known.values(), *fresh.values()], key=lambda i: i.sha256),
                        added=list(fresh.values()),
                        batch=batch,
                    )
                    completed = await self._store.complete_version(record, claim)
                except BaseException:
                    await _give_up(self._store, claim)
                    raise
                if completed:
                    await self._announce(record)
                    return record.version, True, set(fresh)
                log.warning("claim on %s was abandoned before it completed", record.id)

    async def _wait_or_abandon(self, claim: Claim) -> None:
        """Let another ingest finish the version it claimed, unless it is stale (crashed)."""
        if datetime.now(UTC) - claim.claimed_at < timedelta(seconds=self._claim_timeout_s):
            await asyncio.sleep(_CLAIM_POLL_S)
        elif await self._store.abandon_version(claim):
            log.warning(
                "%s was claimed at %s and never completed: abandoned, its number is skipped",
                claim.document_id,
                claim.claimed_at.isoformat(),
            )

    async def _write_version(
        self,
        claim: Claim,
        images: list[ManifestImage],
        *,
        added: list[ManifestImage],
        batch: Batch,
    ) -> VersionRecord:
        dataset_id, version = claim.dataset_id, claim.version
        now = datetime.now(UTC)
        manifest = Manifest(dataset_id=dataset_id, version=version, created_at=now, images=images)
        body = json.dumps(manifest.model_dump(mode="json"), sort_keys=True).encode()
        key = manifest_key(dataset_id, version)
        stored = await self._objects.put_once(
            Bucket.DATASETS, key, body, content_type="application/json"
        )
        event = DatasetIngested.origin(
            DatasetIngestedPayload(
                dataset_id=dataset_id,
                version=version,
                manifest_key=key,
                image_count=len(images),
                labeled_by_layout=sum(1 for i in images if i.label is not None),
                refused_count=batch.refused,
                duplicate_count=batch.offered - len(added),
                source=batch.source,
            ),
            producer="ingestion",
        )
        return VersionRecord(
            dataset_id=dataset_id,
            version=version,
            manifest_key=key,
            manifest_sha256=stored.sha256,
            image_count=len(images),
            added_count=len(added),
            event=event,
            created_at=now,
            traceparent=traceparent(),
        )

    async def _announce(self, record: VersionRecord) -> None:
        """Publish the new version's event at once; if that fails, the version is made all the
        same and its event stays pending in the version's outbox, for the outbox relay to
        publish once Kafka answers (a retry would find nothing new to announce)."""
        await announce_now(
            self._publish,
            record.announcement,
            lambda: self._store.mark_published(record),
            subject=record.id,
        )

    async def _manifest(self, record: VersionRecord) -> Manifest:
        body = await self._objects.get_verified(
            Bucket.DATASETS, record.manifest_key, sha256=record.manifest_sha256
        )
        return Manifest.model_validate_json(body)

    async def _stage_drop(self, bucket: str, key: str, dataset_id: str) -> None:
        name = PurePosixPath(key)
        label = LABEL_WORDS.get(name.parent.name.lower()) if len(name.parts) > 2 else None
        try:
            data = await self._objects.read_external(bucket, key, max_bytes=self._limits.max_bytes)
            file = IncomingFile(filename=key, data=data, label=label)
        except InvalidInputError as exc:
            file = IncomingFile(filename=key, data=b"", problem=exc.message)
        outcome, image = await self._check_and_store(file)
        now = datetime.now(UTC)
        if image is None:
            await self._store.record_refusals([_refusal(dataset_id, outcome, "bucket", now)])
        else:
            await self._store.record_images([image], at=now)
            await self._store.stage(dataset_id, [image])
        await self._store.mark_read(dataset_id, key)

    async def _close_drop(self, bucket: str, dataset_id: str) -> None:
        read = await self._store.read_keys(dataset_id)
        overtaken = [
            key
            for key in await self._objects.list_keys(bucket, dataset_id)
            if key not in read and PurePosixPath(key).name != READY_MARKER
        ]
        if overtaken:
            log.info(
                "%s/_READY came before %d of its files; reading them now",
                dataset_id,
                len(overtaken),
            )
        for key in overtaken:
            await self._stage_drop(bucket, key, dataset_id)
        staged = await self._store.staged(dataset_id)
        if not staged:
            log.info("%s/_READY with nothing staged: no new version", dataset_id)
            return
        await self._new_version(
            dataset_id, staged, Batch(source="bucket", offered=len(staged), refused=0)
        )
        await self._store.unstage(dataset_id, [image.sha256 for image in staged])


async def _give_up(store: IngestionStore, claim: Claim) -> None:
    """Abandon a claim whose version could not be written, so the next ingest need not wait
    out the claim timeout; if MongoDB is away too, the timeout does it. A completion that was
    applied but whose answer was lost stays complete: only a reserved claim is abandoned."""
    try:
        await store.abandon_version(claim)
    except Exception as exc:
        log.warning("%s: claim left to time out: %r", claim.document_id, exc)


def _check_dataset_id(dataset_id: str) -> None:
    if (
        not dataset_id
        or len(dataset_id) > 64
        or not all(c.isalnum() or c in "-_." for c in dataset_id)
        or dataset_id.startswith(".")
    ):
        raise InvalidInputError(
            f"dataset id {dataset_id!r} must be 1-64 letters, digits, '-', '_' or '.'"
        )


async def _aiter(
    files: AsyncIterable[IncomingFile] | Iterable[IncomingFile],
) -> AsyncIterable[IncomingFile]:
    if isinstance(files, AsyncIterable):
        async for file in files:
            yield file
    else:
        for file in files:
            yield file


def _dedupe_batch(outcomes: list[FileOutcome]) -> list[FileOutcome]:
    """Mark the second and later copies of the same bytes within one batch as duplicates."""
    seen: set[str] = set()
    marked = []
    for outcome in outcomes:
        if outcome.status == Outcome.ACCEPTED and outcome.sha256 in seen:
            outcome = FileOutcome(
                outcome.filename, Outcome.DUPLICATE, outcome.sha256, "same bytes earlier in batch"
            )
        seen.add(outcome.sha256)
        marked.append(outcome)
    return marked


def _duplicate(outcome: FileOutcome) -> FileOutcome:
    return FileOutcome(
        outcome.filename, Outcome.DUPLICATE, outcome.sha256, "already in the dataset"
    )


def _refusal(dataset_id: str, outcome: FileOutcome, source: str, at: datetime) -> Refusal:
    identity = f"{dataset_id}/{outcome.filename}/{outcome.sha256}/{outcome.reason}"
    return Refusal(
        id=str(uuid.uuid5(ID_NAMESPACE, identity)),
        dataset_id=dataset_id,
        filename=outcome.filename,
        sha256=outcome.sha256 or None,
        reason=outcome.reason,
        source=source,
        at=at,
    )


def _mime(image_format: str) -> str:
    return {"PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp"}.get(
        image_format, "image/tiff"
    )


__all__ = [
    "FileOutcome",
    "IngestResult",
    "IngestionService",
    "Outcome",
]
