"""Storage against the real MinIO and FerretDB: digests are recorded and enforced, writes are
idempotent, indexes bootstrap twice, and a dead server is a transient error, raised quickly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from minio.helpers import ObjectWriteResult
from motor.motor_asyncio import AsyncIOMotorDatabase
from pydantic import SecretStr
from pymongo import UpdateOne
from screwops_errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from screwops_settings import StackSettings
from screwops_storage import (
    Document,
    IndexSpec,
    ObjectStore,
    bulk_write,
    database,
    ensure_indexes,
    mongo_client,
    mongo_errors,
    sha256_hex,
)

from tests.support import unique


class CountingMinio(Minio):
    """A real client that counts uploads, to tell an idempotent write from a repeated one."""

    uploads = 0

    def put_object(self, *args: Any, **kwargs: Any) -> ObjectWriteResult:
        self.uploads += 1
        return super().put_object(*args, **kwargs)


def raw_client(settings: StackSettings) -> CountingMinio:
    secret = settings.minio.secret_key
    assert secret is not None, "no MinIO secret key in the stack home: make up first"
    return CountingMinio(
        settings.minio.endpoint,
        access_key=settings.minio.access_key,
        secret_key=secret.get_secret_value(),
        secure=settings.minio.secure,
    )


@pytest.fixture
def s3(settings: StackSettings) -> CountingMinio:
    return raw_client(settings)


@pytest.fixture
def store(s3: CountingMinio) -> ObjectStore:
    return ObjectStore(s3)


@pytest.fixture
async def bucket(settings: StackSettings, store: ObjectStore) -> AsyncIterator[str]:
    name = unique("it-storage")
    await store.ensure_buckets(name)
    yield name
    s3 = raw_client(settings)
    for obj in s3.list_objects(name, recursive=True):
        s3.remove_object(name, obj.object_name)
    s3.remove_bucket(name)


@pytest.fixture
async def db(settings: StackSettings) -> AsyncIterator[AsyncIOMotorDatabase[Document]]:
    handle = database(settings.mongo, unique("it_storage").replace("-", "_"), appname="it")
    yield handle
    await handle.client.drop_database(handle.name)
    handle.client.close()


async def test_ensure_buckets_is_idempotent(store: ObjectStore, bucket: str) -> None:
    await store.ensure_buckets(bucket, bucket)
    assert await store.list_keys(bucket, "images") == []


async def test_put_content_twice_stores_one_object_and_uploads_once(
    store: ObjectStore, s3: CountingMinio, bucket: str
) -> None:
    image = b"\x89PNG a screw" * 100

    first = await store.put_content(bucket, image, prefix="images", content_type="image/png")
    second = await store.put_content(bucket, image, prefix="images", content_type="image/png")

    digest = sha256_hex(image)
    assert first == second
    assert (first.key, first.sha256, first.size) == (
        f"images/{digest[:2]}/{digest}",
        digest,
        len(image),
    )
    assert s3.uploads == 1
    assert await store.list_keys(bucket, "images") == [first.key]
    stat = s3.stat_object(bucket, first.key)
    assert (stat.metadata or {}).get("x-amz-meta-sha256") == digest
    assert stat.content_type == "image/png"
    assert await store.get_verified(bucket, first.key, sha256=digest) == image


async def test_put_named_overwrites_only_when_the_bytes_change(
    store: ObjectStore, s3: CountingMinio, bucket: str
) -> None:
    key = "manifests/dataset-1/v1.json"
    await store.put_named(bucket, key, b'{"images": 1}', content_type="application/json")
    await store.put_named(bucket, key, b'{"images": 1}', content_type="application/json")
    changed = await store.put_named(bucket, key, b'{"images": 2}')

    assert s3.uploads == 2
    assert await store.get_verified(bucket, key) == b'{"images": 2}'
    assert changed.sha256 == sha256_hex(b'{"images": 2}')


async def test_get_verified_detects_bytes_that_no_longer_match_their_digest(
    store: ObjectStore, s3: CountingMinio, bucket: str, tmp_path: Path
) -> None:
    stored = await store.put_content(bucket, b"good screw", prefix="images")
    corrupt = b"bad screw!"
    s3.put_object(
        bucket, stored.key, io.BytesIO(corrupt), len(corrupt), metadata={"sha256": stored.sha256}
    )

    with pytest.raises(IntegrityError, match=stored.sha256):
        await store.get_verified(bucket, stored.key)
    with pytest.raises(IntegrityError):
        await store.get_verified(bucket, stored.key, sha256=stored.sha256)
    with pytest.raises(IntegrityError):
        await store.get_file(bucket, stored.key, tmp_path / "screw.png")
    assert await asyncio.to_thread(os.listdir, tmp_path) == []


async def test_get_verified_checks_the_expected_digest_over_the_recorded_one(
    store: ObjectStore, bucket: str
) -> None:
    stored = await store.put_named(bucket, "reports/r.json", b"{}")
    with pytest.raises(IntegrityError):
        await store.get_verified(bucket, stored.key, sha256=sha256_hex(b"something else"))


async def test_an_object_without_a_recorded_digest_cannot_be_verified(
    store: ObjectStore, s3: CountingMinio, bucket: str
) -> None:
    s3.put_object(bucket, "foreign/blob", io.BytesIO(b"x"), 1)
    with pytest.raises(IntegrityError, match="no recorded sha256"):
        await store.get_verified(bucket, "foreign/blob")
    assert await store.get_verified(bucket, "foreign/blob", sha256=sha256_hex(b"x")) == b"x"


async def test_missing_objects_and_buckets_are_not_found(store: ObjectStore, bucket: str) -> None:
    assert not await store.exists(bucket, "images/none")
    with pytest.raises(NotFoundError):
        await store.get_verified(bucket, "images/none")
    with pytest.raises(NotFoundError):
        await store.put_named(unique("it-missing"), "a/b", b"x")
    with pytest.raises(NotFoundError):
        await store.get_directory(bucket, "models/none", Path("/nonexistent"))
    stored = await store.put_named(bucket, "images/some", b"x")
    assert await store.exists(bucket, stored.key)


async def test_keys_that_escape_their_prefix_never_reach_minio(
    store: ObjectStore, s3: CountingMinio, bucket: str
) -> None:
    for key in ["../other-bucket/x", "/abs", "a/../../b", "a\\b"]:
        with pytest.raises(InvalidInputError):
            await store.put_named(bucket, key, b"x")
    with pytest.raises(InvalidInputError):
        await store.put_content(bucket, b"x", prefix="images/..")
    with pytest.raises(InvalidInputError):
        await store.ensure_buckets("Not_A_Bucket")
    assert s3.uploads == 0


async def test_a_model_directory_round_trips_with_its_digests(
    store: ObjectStore, bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "saved"
    files = {
        "saved_model.pb": b"graph" * 1000,
        "variables/variables.index": b"index",
        "variables/variables.data-00000-of-00001": bytes(range(256)) * 5000,
        "assets/labels.txt": b"good\nnot-good\n",
    }
    for relative, content in files.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_bytes(content)
    prefix = "models/screw-classifier/1"

    uploaded = await store.put_directory(bucket, source, prefix=prefix)
    downloaded = await store.get_directory(bucket, prefix, tmp_path / "restored")

    assert sorted(uploaded, key=lambda o: o.key) == downloaded
    assert {o.key: o.sha256 for o in downloaded} == {
        f"{prefix}/{relative}": sha256_hex(content) for relative, content in files.items()
    }
    for relative, content in files.items():
        assert (tmp_path / "restored" / relative).read_bytes() == content
    assert await store.list_keys(bucket, "models/screw-classifier") == sorted(
        f"{prefix}/{relative}" for relative in files
    )


async def test_a_directory_with_a_symlink_is_refused(
    store: ObjectStore, bucket: str, tmp_path: Path
) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").symlink_to("/etc/hostname")
    with pytest.raises(InvalidInputError, match="symbolic link"):
        await store.put_directory(bucket, tmp_path / "model", prefix="models/m/1")


async def test_an_unreachable_minio_is_a_transient_error_raised_quickly(
    settings: StackSettings,
) -> None:
    dead = ObjectStore.from_settings(settings.minio.model_copy(update={"endpoint": "127.0.0.1:1"}))
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        await dead.exists("it-bucket", "images/a")
    assert time.monotonic() - started < 5


async def test_ensure_indexes_twice_then_a_unique_violation_is_already_exists(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    specs = [
        IndexSpec("labels", (("image", 1), ("annotator", 1)), unique=True, name="image_annotator"),
        IndexSpec("labels", (("created_at", -1),)),
        IndexSpec("processed_events", (("consumer", 1), ("event_id", 1)), unique=True),
    ]
    await ensure_indexes(db, specs)
    await ensure_indexes(db, specs)

    assert "image_annotator" in await db.labels.index_information()
    with mongo_errors():
        await db.labels.insert_one({"image": "sha-1", "annotator": "ana", "label": "good"})
    with pytest.raises(AlreadyExistsError), mongo_errors():
        await db.labels.insert_one({"image": "sha-1", "annotator": "ana", "label": "bad"})
    assert await db.labels.count_documents({}) == 1


async def test_an_index_redeclared_with_other_options_is_refused(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    await ensure_indexes(db, [IndexSpec("runs", (("run_id", 1),), name="run_id")])
    with pytest.raises(FailedPreconditionError, match="run_id"):
        await ensure_indexes(db, [IndexSpec("runs", (("run_id", 1),), unique=True, name="run_id")])


async def test_datetimes_come_back_timezone_aware(db: AsyncIOMotorDatabase[Document]) -> None:
    written = dt.datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    await db.runs.insert_one({"_id": "run-1", "started_at": written})
    found = await db.runs.find_one({"_id": "run-1"})
    assert found is not None
    assert found["started_at"] == written


async def test_an_unreachable_mongo_is_a_transient_error_raised_quickly(
    settings: StackSettings,
) -> None:
    dead = settings.mongo.model_copy(update={"uri": SecretStr("mongodb://127.0.0.1:1/")})
    client = mongo_client(dead, timeout_ms=500)
    started = time.monotonic()
    try:
        with pytest.raises(UnavailableError), mongo_errors():
            await client.it.things.find_one({})
    finally:
        client.close()
    assert time.monotonic() - started < 5


async def test_a_bulk_write_far_larger_than_the_servers_pool_completes(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    """FerretDB v1 stalls on one update command with over 100 statements; chunks avoid it."""
    operations = [
        UpdateOne({"_id": f"img-{i}"}, {"$setOnInsert": {"n": i}}, upsert=True) for i in range(300)
    ]
    await asyncio.wait_for(bulk_write(db.images, operations), timeout=60)
    await asyncio.wait_for(bulk_write(db.images, operations), timeout=60)
    assert await db.images.count_documents({}) == 300
    assert (await db.command("ping"))["ok"] == 1.0
