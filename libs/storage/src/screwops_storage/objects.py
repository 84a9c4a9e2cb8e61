"""MinIO artifacts with their sha256 recorded beside them and checked on every read.

Every object written here carries its digest in ``x-amz-meta-sha256``, and every read re-hashes
the bytes, so a corrupted or swapped artifact fails loudly with :class:`IntegrityError` instead of
training or serving from bad data. The ``minio`` client is synchronous; each call runs in a worker
thread so the services' event loops keep serving while an upload is in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.datatypes import Object
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from screwops_errors import (
    AlreadyExistsError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ScrewOpsError,
    UnauthenticatedError,
    UnavailableError,
)
from screwops_settings import MinioSettings

from screwops_storage.keys import (
    content_key,
    join_key,
    sha256_hex,
    validate_digest,
    validate_key,
)

__all__ = ["SHA256_METADATA", "ListedObject", "ObjectStore", "StoredObject", "minio_client"]

SHA256_METADATA = "x-amz-meta-sha256"
"""The object metadata header that holds the sha256 of an object's bytes."""

_CHUNK = 1024 * 1024
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})
_BUSY = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "XMinioServerNotInitialized",
    }
)
_BAD_CREDENTIALS = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"})


def minio_client(
    settings: MinioSettings, *, http_client: urllib3.PoolManager | None = None
) -> Minio:
    """A client of the configured MinIO as ``settings.access_key``; without a secret key (none
    set, none in the stack home) its requests are anonymous, which MinIO refuses."""
    secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
    return Minio(
        settings.endpoint,
        access_key=settings.access_key if secret else "",
        secret_key=secret,
        secure=settings.secure,
        http_client=http_client,
    )


@dataclass(frozen=True, order=True)
class ListedObject:
    """An object's key and when it was last written, as a listing gives them."""

    key: str
    modified: datetime


@dataclass(frozen=True)
class StoredObject:
    """Where an artifact was stored and what its bytes hash to, for lineage records in MongoDB."""

    key: str
    sha256: str
    size: int


class ObjectStore:
    """Artifacts in MinIO: content-addressed images and named manifests, reports and models.

    Writes are idempotent (an object already holding the same digest is not uploaded again), so
    an event handler that is redelivered after a crash can simply repeat its writes.
    """

    def __init__(self, client: Minio) -> None:
        self._client = client

    @classmethod
    def from_settings(
        cls,
        settings: MinioSettings,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 2,
    ) -> ObjectStore:
        """A store for the configured MinIO with short connect timeouts and few retries.

        The minio client's own defaults wait minutes on a dead server; failing in seconds with
        :class:`UnavailableError` lets the caller (the bus, a gRPC deadline) decide about retrying.
        """
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=10,
            retries=urllib3.Retry(
                total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        return cls(minio_client(settings, http_client=http))

    async def ensure_buckets(self, *names: str) -> None:
        """Create the buckets a service writes to, if missing, so a fresh stack needs no setup.

        Safe to call from several services at once: losing the race to create is success.
        """
        await asyncio.to_thread(self._ensure_buckets, names)

    async def put_content(
        self,
        bucket: str,
        data: bytes,
        *,
        prefix: str,
        content_type: str = "application/octet-stream",
        check_existing: bool = True,
    ) -> StoredObject:
        """Store ``data`` under ``prefix/<sha[:2]>/<sha>`` so equal bytes are stored once.

        Re-ingesting the same image is a no-op, which is what makes ingestion idempotent.
        ``check_existing=False`` skips the existence check (one request fewer) for callers that
        store mostly new objects: rewriting a content-addressed object changes nothing.
        """
        key = content_key(prefix, sha256_hex(data))
        return await asyncio.to_thread(self._put, bucket, key, data, content_type, check_existing)

    async def put_named(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
    ) -> StoredObject:
        """Store ``data`` under a chosen key (a manifest, a report) with its digest recorded."""
        validate_key(key)
        return await asyncio.to_thread(self._put, bucket, key, data, content_type)

    async def put_once(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
    ) -> StoredObject:
        """Store a named artifact that must never change once written.

        Writing the same bytes again is a no-op, so a retried or redelivered step can repeat it;
        different bytes are refused rather than replacing what a reader may already have checked
        against a recorded digest. The check and the upload are two requests, so this does not
        arbitrate between concurrent writers: the key must be one that only its writer can own,
        derived from something it claimed in MongoDB first (a version number under a unique
        index); this is the guard that turns a bug in that claim into an error, not a silent
        overwrite.

        Raises:
            AlreadyExistsError: ``key`` holds other bytes (their digest is in the message).
        """
        validate_key(key)
        return await asyncio.to_thread(self._put_once, bucket, key, data, content_type)

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes:
        """The object's bytes, only if they hash to ``sha256`` (or to the recorded digest).

        Pass the digest stored in MongoDB when there is one: it also catches an object that was
        replaced together with its metadata.

        Raises:
            NotFoundError: no such bucket or object.
            IntegrityError: the bytes do not match, or the object has no recorded digest.
        """
        validate_key(key)
        if sha256 is not None:
            validate_digest(sha256)
        return await asyncio.to_thread(self._get, bucket, key, sha256)

    async def read_external(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        """An object written outside ScrewOps (an upstream drop), which carries no digest.

        Its size is checked before a byte is read, so an oversized drop is refused cheaply.

        Raises:
            NotFoundError: no such bucket or object.
            InvalidInputError: the object is larger than ``max_bytes``.
        """
        validate_key(key)
        return await asyncio.to_thread(self._read_external, bucket, key, max_bytes)

    async def exists(self, bucket: str, key: str) -> bool:
        """Whether ``key`` is stored, so callers can skip work whose output already exists."""
        validate_key(key)
        return await asyncio.to_thread(self._stat, bucket, key) is not None

    async def expire_after(self, bucket: str, days: int | None) -> None:
        """Have MinIO delete ``bucket``'s objects ``days`` after each was written (a lifecycle
        rule, which MinIO applies itself, so no process has to list the bucket); None removes
        the rule and objects are kept for ever. Setting the same rule again changes nothing."""
        await asyncio.to_thread(self._expire_after, bucket, days)

    async def list_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under the directory-like ``prefix`` (``prefix/…``), sorted."""
        validate_key(prefix)
        return await asyncio.to_thread(self._list, bucket, prefix)

    async def list_objects(self, bucket: str, prefix: str) -> list[ListedObject]:
        """Every object under the directory-like ``prefix`` (all of the bucket's for "") with
        when it was last written, sorted by key: what a sweep needs to leave objects younger than
        its minimum age."""
        if prefix:
            validate_key(prefix)
        return await asyncio.to_thread(self._list_objects, bucket, prefix)

    async def delete_objects(self, bucket: str, keys: Sequence[str]) -> None:
        """Delete ``keys`` (those already gone included: deleting is idempotent).

        Raises:
            PermissionDeniedError: this user may not delete them.
            UnavailableError: MinIO did not answer, or did not delete one of them.
        """
        for key in keys:
            validate_key(key)
        await asyncio.to_thread(self._delete_objects, bucket, list(keys))

    async def put_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str = "application/octet-stream",
    ) -> StoredObject:
        """Upload one local file without reading it into memory (model weights can be large)."""
        validate_key(key)
        return await asyncio.to_thread(self._put_file, bucket, key, path, content_type)

    async def get_file(
        self, bucket: str, key: str, path: Path, *, sha256: str | None = None
    ) -> StoredObject:
        """Download one object to ``path``; the file appears only once its digest has matched.

        The bytes go to a temporary file beside ``path`` and are renamed into place after the
        check, so a reader of ``path`` never sees a partial or corrupt file.
        """
        validate_key(key)
        if sha256 is not None:
            validate_digest(sha256)
        return await asyncio.to_thread(self._get_file, bucket, key, path, sha256)

    async def put_directory(self, bucket: str, root: Path, *, prefix: str) -> list[StoredObject]:
        """Upload the tree under ``root`` to ``prefix/<relative path>`` (a SavedModel, a repo).

        Symbolic links are refused: following one could upload files from outside the tree.
        """
        validate_key(prefix)
        return await asyncio.to_thread(self._put_directory, bucket, root, prefix)

    async def get_directory(self, bucket: str, prefix: str, root: Path) -> list[StoredObject]:
        """Download everything under ``prefix`` into ``root``, verifying each file's digest.

        Raises:
            NotFoundError: nothing is stored under ``prefix``.
            InvalidInputError: a stored key would land outside ``root``.
            IntegrityError: a file's bytes do not match its recorded digest.
        """
        validate_key(prefix)
        return await asyncio.to_thread(self._get_directory, bucket, prefix, root)

    def _ensure_buckets(self, names: tuple[str, ...]) -> None:
        for name in names:
            _validate_bucket(name)
            with _s3_errors(name):
                if self._client.bucket_exists(name):
                    continue
                try:
                    self._client.make_bucket(name)
                except S3Error as error:
                    if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

    def _expire_after(self, bucket: str, days: int | None) -> None:
        _validate_bucket(bucket)
        with _s3_errors(bucket):
            if days is None:
                try:
                    self._client.delete_bucket_lifecycle(bucket)
                except S3Error as error:
                    if error.code != "NoSuchLifecycleConfiguration":
                        raise
                return
            rule = Rule(
                ENABLED,
                rule_filter=Filter(prefix=""),
                rule_id="screwops-retention",
                expiration=Expiration(days=days),
            )
            self._client.set_bucket_lifecycle(bucket, LifecycleConfig([rule]))

    def _stat(self, bucket: str, key: str) -> Object | None:
        _validate_bucket(bucket)
        with _s3_errors(bucket, key):
            try:
                return self._client.stat_object(bucket, key)
            except S3Error as error:
                if error.code == "NoSuchKey":
                    return None
                raise

    def _already_stored(self, bucket: str, key: str, digest: str, size: int) -> bool:
        stat = self._stat(bucket, key)
        return stat is not None and stat.size == size and _recorded(stat.metadata) == digest

    def _put(
        self, bucket: str, key: str, data: bytes, content_type: str, check_existing: bool = True
    ) -> StoredObject:
        stored = StoredObject(key=key, sha256=sha256_hex(data), size=len(data))
        if not (check_existing and self._already_stored(bucket, key, stored.sha256, stored.size)):
            with _s3_errors(bucket, key):
                self._client.put_object(
                    bucket,
                    key,
                    io.BytesIO(data),
                    len(data),
                    content_type=content_type,
                    metadata={"sha256": stored.sha256},
                )
        return stored

    def _put_once(self, bucket: str, key: str, data: bytes, content_type: str) -> StoredObject:
        stored = StoredObject(key=key, sha256=sha256_hex(data), size=len(data))
        stat = self._stat(bucket, key)
        if stat is None:
            return self._put(bucket, key, data, content_type, check_existing=False)
        if stat.size == stored.size and _recorded(stat.metadata) == stored.sha256:
            return stored
        raise AlreadyExistsError(
            f"{bucket}/{key} already holds other bytes (sha256 {_recorded(stat.metadata)}, "
            f"not {stored.sha256}); a named artifact is never overwritten"
        )

    def _get(self, bucket: str, key: str, expected: str | None) -> bytes:
        _validate_bucket(bucket)
        with _s3_errors(bucket, key):
            response = self._client.get_object(bucket, key)
            try:
                data = response.read()
                recorded = _recorded(response.headers)
            finally:
                response.close()
                response.release_conn()
        _check(bucket, key, sha256_hex(data), expected or recorded)
        return data

    def _read_external(self, bucket: str, key: str, max_bytes: int) -> bytes:
        stat = self._stat(bucket, key)
        if stat is None:
            raise NotFoundError(f"s3://{bucket}/{key} does not exist")
        if (stat.size or 0) > max_bytes:
            raise InvalidInputError(
                f"s3://{bucket}/{key} is {stat.size} bytes, over the limit of {max_bytes}"
            )
        with _s3_errors(bucket, key):
            response = self._client.get_object(bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def _list(self, bucket: str, prefix: str) -> list[str]:
        _validate_bucket(bucket)
        with _s3_errors(bucket, prefix):
            return sorted(
                obj.object_name
                for obj in self._client.list_objects(bucket, prefix=f"{prefix}/", recursive=True)
                if obj.object_name is not None
            )

    def _list_objects(self, bucket: str, prefix: str) -> list[ListedObject]:
        _validate_bucket(bucket)
        with _s3_errors(bucket, prefix):
            return sorted(
                ListedObject(obj.object_name, obj.last_modified)
                for obj in self._client.list_objects(
                    bucket, prefix=f"{prefix}/" if prefix else None, recursive=True
                )
                if obj.object_name is not None and obj.last_modified is not None
            )

    def _delete_objects(self, bucket: str, keys: list[str]) -> None:
        _validate_bucket(bucket)
        with _s3_errors(bucket, keys[0] if keys else ""):
            failed = list(self._client.remove_objects(bucket, (DeleteObject(key) for key in keys)))
        if failed:
            refused = f"MinIO did not delete {len(failed)} of {len(keys)} objects in {bucket}"
            first = f"{failed[0].code} ({failed[0].name})"
            if failed[0].code == "AccessDenied":
                raise PermissionDeniedError(f"{refused}: {first}")
            raise UnavailableError(f"{refused}: {first}")

    def _put_file(self, bucket: str, key: str, path: Path, content_type: str) -> StoredObject:
        with path.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        stored = StoredObject(key=key, sha256=digest, size=path.stat().st_size)
        if not self._already_stored(bucket, key, stored.sha256, stored.size):
            with _s3_errors(bucket, key):
                self._client.fput_object(
                    bucket,
                    key,
                    str(path),
                    content_type=content_type,
                    metadata={"sha256": digest},
                )
        return stored

    def _get_file(self, bucket: str, key: str, path: Path, expected: str | None) -> StoredObject:
        _validate_bucket(bucket)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(descriptor, "wb") as file, _s3_errors(bucket, key):
                response = self._client.get_object(bucket, key)
                try:
                    for chunk in response.stream(_CHUNK):
                        digest.update(chunk)
                        file.write(chunk)
                        size += len(chunk)
                    recorded = _recorded(response.headers)
                finally:
                    response.close()
                    response.release_conn()
            _check(bucket, key, digest.hexdigest(), expected or recorded)
            Path(temporary).replace(path)
        except BaseException:
            with suppress(FileNotFoundError):
                Path(temporary).unlink()
            raise
        return StoredObject(key=key, sha256=digest.hexdigest(), size=size)

    def _put_directory(self, bucket: str, root: Path, prefix: str) -> list[StoredObject]:
        if not root.is_dir():
            raise InvalidInputError(f"{root} is not a directory")
        files: list[Path] = []
        for directory, subdirectories, names in os.walk(root):
            for name in [*subdirectories, *names]:
                if (Path(directory) / name).is_symlink():
                    raise InvalidInputError(f"{Path(directory) / name} is a symbolic link")
            files.extend(Path(directory) / name for name in names)
        if not files:
            raise InvalidInputError(f"{root} holds no files")
        return [
            self._put_file(
                bucket,
                join_key(prefix, file.relative_to(root).as_posix()),
                file,
                "application/octet-stream",
            )
            for file in sorted(files)
        ]

    def _get_directory(self, bucket: str, prefix: str, root: Path) -> list[StoredObject]:
        keys = self._list(bucket, prefix)
        if not keys:
            raise NotFoundError(f"nothing stored under {bucket}/{prefix}/")
        stored = []
        for key in keys:
            relative = validate_key(key, prefix=prefix).removeprefix(f"{prefix}/")
            stored.append(self._get_file(bucket, key, root.joinpath(*relative.split("/")), None))
        return stored


def _validate_bucket(name: str) -> None:
    if not _BUCKET.fullmatch(name) or ".." in name:
        raise InvalidInputError(f"{name!r} is not a valid bucket name")


def _recorded(headers: Mapping[str, str] | None) -> str | None:
    """The recorded digest; header names are compared case-insensitively, as HTTP requires."""
    for name, value in (headers or {}).items():
        if name.lower() == SHA256_METADATA:
            return value
    return None


def _check(bucket: str, key: str, actual: str, expected: str | None) -> None:
    if expected is None:
        raise IntegrityError(f"{bucket}/{key} has no recorded sha256 to verify against")
    if actual != expected:
        raise IntegrityError(f"{bucket}/{key} hashes to {actual}, expected {expected}")


@contextmanager
def _s3_errors(bucket: str, key: str | None = None) -> Iterator[None]:
    """Turn minio's and urllib3's errors into typed ones, so callers know whether to retry."""
    where = f"{bucket}/{key}" if key else bucket
    try:
        yield
    except S3Error as error:
        mapped = _translate_s3(error, where)
        if mapped is None:
            raise
        raise mapped from error
    except (ServerError, InvalidResponseError, urllib3.exceptions.HTTPError) as error:
        raise UnavailableError(
            f"MinIO did not answer for {where}: {type(error).__name__}"
        ) from error


def _translate_s3(error: S3Error, where: str) -> ScrewOpsError | None:
    if error.code in _MISSING:
        return NotFoundError(f"{where} does not exist")
    if error.code in _BUSY:
        return UnavailableError(f"MinIO is busy ({error.code}) for {where}")
    if error.code in _BAD_CREDENTIALS:
        return UnauthenticatedError(f"MinIO refused the credentials ({error.code})")
    if error.code == "AccessDenied":
        return PermissionDeniedError(f"MinIO denied access to {where}")
    return None
