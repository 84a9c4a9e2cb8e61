"""Ingestion on the real stack: a gRPC upload through a real channel, ``screwops ingest``
uploading a folder the service cannot read, and a bucket drop that reaches a dataset through
MinIO's own notification to Kafka."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops.v1 import ingestion_pb2, ingestion_pb2_grpc
from screwops_bus import Bus
from screwops_contracts import DatasetIngested, Topic
from screwops_contracts.datasets import Bucket, Label, Manifest
from screwops_ingestion import grpc_api, handlers
from screwops_ingestion.config import Limits, Rules
from screwops_ingestion.service import IngestionService
from screwops_ingestion.store import MongoIngestionStore
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings, kafka_client_options
from screwops_storage import ObjectStore

from tests.support import eventually, minio_client, png, unique


@dataclass
class Running:
    stub: ingestion_pb2_grpc.IngestionServiceAsyncStub
    objects: ObjectStore
    db: AsyncIOMotorDatabase[Any]
    address: str


@pytest.fixture
def import_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one directory the service may import from: beside each test's tmp_path, never above
    it, so a folder in tmp_path reaches the service only by upload."""
    return tmp_path_factory.mktemp("import-root")


@pytest.fixture
async def ingestion(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any], import_root: Path
) -> AsyncIterator[Running]:
    """The real service wired as its __main__ does, on a free port, with its own database."""
    objects = ObjectStore.from_settings(settings.minio)
    await objects.ensure_buckets(Bucket.IMAGES, Bucket.DATASETS)
    store = MongoIngestionStore(mongo_db)
    await store.ensure_indexes()
    bus = Bus(settings, service=unique("ingestion"), db=mongo_db)
    service = IngestionService(
        store,
        objects,
        bus.publish,
        rules=Rules(
            limits=Limits(max_bytes=200_000, max_pixels=2048 * 2048, concurrency=8),
            import_roots=(str(import_root),),
        ),
    )
    handlers.register(bus, service)
    api = grpc_api.server(
        service,
        host="127.0.0.1",
        port=0,
    )
    await bus.broker.start()
    await api.start()
    address = f"127.0.0.1:{api.port}"
    channel = open_aio_channel(address)
    try:
        yield Running(ingestion_pb2_grpc.IngestionServiceStub(channel), objects, mongo_db, address)
    finally:
        await channel.close()
        await api.stop(grace=1)
        await bus.broker.stop()


async def ingested_event(settings: StackSettings, dataset_id: str) -> DatasetIngested:
    """The dataset.ingested event for ``dataset_id`` (read from the real topic)."""
    consumer = AIOKafkaConsumer(
        Topic.DATASET_INGESTED,
        **kafka_client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:

        async def find() -> DatasetIngested | None:
            batch = await consumer.getmany(timeout_ms=500)
            for record in (r for rs in batch.values() for r in rs):
                if record.key == dataset_id.encode():
                    return DatasetIngested.model_validate_json(record.value)
            return None

        return await eventually(find, within=60, what=f"dataset.ingested for {dataset_id}")
    finally:
        await consumer.stop()


def upload(dataset_id: str, files: list[tuple[str, bytes]]) -> list[ingestion_pb2.UploadRequest]:
    return [
        ingestion_pb2.UploadRequest(
            header=ingestion_pb2.UploadHeader(
                dataset_id=dataset_id, default_label=ingestion_pb2.LABEL_GOOD
            )
        ),
        *(
            ingestion_pb2.UploadRequest(
                file=ingestion_pb2.UploadFile(filename=name, content=content)
            )
            for name, content in files
        ),
    ]


async def test_an_upload_stores_good_files_refuses_bad_ones_and_announces_the_version(
    settings: StackSettings, ingestion: Running
) -> None:
    dataset = unique("ds")
    good = [(f"good-{i}.png", png(48, seed=i)) for i in range(5)]
    bad = [
        ("truncated.png", png(48, seed=99)[:150]),
        ("readme.txt", b"hello"),
        ("huge.png", b"\x89PNG\r\n\x1a\n" + bytes(300_000)),
    ]
    result = await ingestion.stub.Upload(iter(upload(dataset, good + bad)), timeout=30)

    assert (result.dataset_version, result.created) == (1, True)
    assert (result.accepted_count, result.refused_count, result.duplicate_count) == (5, 3, 0)
    refused = {f.filename: f.reason for f in result.files if f.reason}
    assert refused["truncated.png"].startswith("corrupt or truncated PNG")
    assert refused["readme.txt"].startswith("not an image")
    assert "over the limit of 200000" in refused["huge.png"]

    event = await ingested_event(settings, dataset)
    assert (event.payload.version, event.payload.image_count) == (1, 5)
    manifest = Manifest.model_validate_json(
        await ingestion.objects.get_verified(Bucket.DATASETS, event.payload.manifest_key)
    )
    for image in manifest.images:
        assert await ingestion.objects.get_verified(Bucket.IMAGES, image.key, sha256=image.sha256)
    assert await ingestion.db.refusals.count_documents({"dataset_id": dataset}) == 3
    assert (
        await ingestion.db.images.count_documents(
            {"_id": {"$in": [i.sha256 for i in manifest.images]}}
        )
        == 5
    )

    again = await ingestion.stub.Upload(iter(upload(dataset, good)), timeout=30)
    assert (again.dataset_version, again.created, again.duplicate_count) == (1, False, 5)
    version = await ingestion.stub.GetDataset(
        ingestion_pb2.GetDatasetRequest(dataset_id=dataset), timeout=10
    )
    assert (version.version, version.image_count) == (1, 5)


async def test_an_upload_without_a_header_is_invalid(ingestion: Running) -> None:
    request = ingestion_pb2.UploadRequest(
        file=ingestion_pb2.UploadFile(filename="a.png", content=png(16))
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await ingestion.stub.Upload(iter([request]), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "starts with a header" in (error.value.details() or "")


async def test_an_unknown_dataset_is_not_found(ingestion: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await ingestion.stub.GetDataset(
            ingestion_pb2.GetDatasetRequest(dataset_id=unique("nothing")), timeout=10
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_import_maps_other_folder_names_and_refuses_unknown_ones(
    ingestion: Running, import_root: Path
) -> None:
    dataset = unique("it-import")
    for seed, name in enumerate(
        ["train/good/a.png", "train/rejects/b.png", "test/thread_top/c.png"]
    ):
        (import_root / name).parent.mkdir(parents=True, exist_ok=True)
        (import_root / name).write_bytes(png(16, seed=seed))
    request = ingestion_pb2.ImportRequest(path=str(import_root), dataset_id=dataset)

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await ingestion.stub.Import(request, timeout=30)
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "class folder(s) train/rejects" in (unknown.value.details() or "")
    unlabeled = ingestion_pb2.ImportRequest(
        path=str(import_root),
        dataset_id=dataset,
        label_map={"rejects": ingestion_pb2.LABEL_UNSPECIFIED},
    )
    with pytest.raises(grpc.aio.AioRpcError) as unspecified:
        await ingestion.stub.Import(unlabeled, timeout=30)
    assert unspecified.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await ingestion.db.images.count_documents({}) == 0

    request.label_map["rejects"] = ingestion_pb2.LABEL_BAD
    result = await ingestion.stub.Import(request, timeout=30)
    assert (result.accepted_count, result.created) == (3, True)
    version = await ingestion.stub.GetDataset(
        ingestion_pb2.GetDatasetRequest(dataset_id=dataset), timeout=10
    )
    manifest = Manifest.model_validate_json(
        await ingestion.objects.get_verified(Bucket.DATASETS, version.manifest_key)
    )
    assert {i.filename: (i.label, i.defect_type, i.origin_split) for i in manifest.images} == {
        "train/good/a.png": (Label.GOOD, None, "train"),
        "train/rejects/b.png": (Label.BAD, None, "train"),
        "test/thread_top/c.png": (Label.BAD, "thread_top", "test"),
    }


async def screwops(*args: str) -> tuple[int, str, str]:
    """``screwops ARGS`` as a user runs it: its own process, its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "screwops_cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_screwops_ingest_uploads_a_folder_the_service_cannot_read_and_resends_nothing(
    ingestion: Running, import_root: Path, tmp_path: Path
) -> None:
    dataset = unique("it-upload")
    places = {
        "train/good/a.png": (Label.GOOD, None, "train"),
        "train/rejects/b.png": (Label.BAD, None, "train"),
        "test/good/c.png": (Label.GOOD, None, "test"),
        "test/thread_top/d.png": (Label.BAD, "thread_top", "test"),
    }
    for seed, name in enumerate(places, start=40):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(png(24, seed=seed))
    common = ["--dataset", dataset, "--label-map", "rejects=bad", "--address", ingestion.address]
    assert not tmp_path.is_relative_to(import_root)

    refused, _, why = await screwops("ingest", str(tmp_path), "--server-side", *common)
    assert refused == 6, why
    assert "outside the import roots" in why

    code, out, err = await screwops("ingest", str(tmp_path), *common, "--json")
    assert code == 0, err
    first = json.loads(out)
    assert (first["dataset_version"], first["accepted_count"], first["created"]) == ("1", "4", True)
    version = await ingestion.stub.GetDataset(
        ingestion_pb2.GetDatasetRequest(dataset_id=dataset), timeout=10
    )
    manifest = Manifest.model_validate_json(
        await ingestion.objects.get_verified(Bucket.DATASETS, version.manifest_key)
    )
    assert {i.filename: (i.label, i.defect_type, i.origin_split) for i in manifest.images} == (
        places
    )

    code, out, err = await screwops("ingest", str(tmp_path), *common)
    assert code == 0, err
    assert f"{dataset} v1" in out
    assert "(new)" not in out
    assert f"sent 0 file(s); 4 already in {dataset}" in out
    latest = await ingestion.stub.GetDataset(
        ingestion_pb2.GetDatasetRequest(dataset_id=dataset), timeout=10
    )
    assert (latest.version, latest.image_count) == (1, 4)


async def test_a_bucket_drop_reaches_a_dataset_through_minio_notifications(
    settings: StackSettings, ingestion: Running
) -> None:
    dataset = unique("drop")
    s3 = minio_client(settings.minio)

    def drop(key: str, data: bytes) -> None:
        s3.put_object(Bucket.DROP, f"{dataset}/{key}", io.BytesIO(data), len(data))

    # As an upstream system drops a batch: the files, then at once the marker (it cannot know
    # what ingestion has read so far).
    for i, folder in enumerate(["good", "good", "bad"]):
        await asyncio.to_thread(drop, f"{folder}/{i}.png", png(40, seed=100 + i))
    await asyncio.to_thread(drop, "_READY", b"")

    event = await ingested_event(settings, dataset)
    assert (event.payload.source, event.payload.image_count) == ("bucket", 3)
    manifest = Manifest.model_validate_json(
        await ingestion.objects.get_verified(Bucket.DATASETS, event.payload.manifest_key)
    )
    assert sorted(str(i.label) for i in manifest.images) == ["bad", "good", "good"]
