"""The ingestion servicer without a network: over-long text is refused before anything is stored;
FindImages tells what a dataset holds; an upload keeps each file's origin split."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest
from screwops.v1 import ingestion_pb2
from screwops_contracts.datasets import Bucket, Label, Manifest
from screwops_ingestion.config import Limits, Rules
from screwops_ingestion.grpc_api import Context, IngestionApi
from screwops_ingestion.service import IngestionService

from tests.fakes import AbortedError, FakeContext, FakeObjects, RecordingBus
from tests.support import png
from tests.unit.ingestion.fakes import FakeStore

CONTEXT = cast(Context, FakeContext())


def api(objects: FakeObjects) -> IngestionApi:
    rules = Rules(
        limits=Limits(max_bytes=50_000, max_pixels=512 * 512, concurrency=4), import_roots=("/",)
    )
    return IngestionApi(
        IngestionService(FakeStore(), objects, RecordingBus("ingestion").publish, rules=rules)
    )


async def upload(*files: ingestion_pb2.UploadFile) -> AsyncIterator[ingestion_pb2.UploadRequest]:
    yield ingestion_pb2.UploadRequest(header=ingestion_pb2.UploadHeader(dataset_id="screws"))
    for file in files:
        yield ingestion_pb2.UploadRequest(file=file)


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(AbortedError) as aborted:
        await call
    return aborted.value.code, aborted.value.details


@pytest.mark.parametrize(
    ("file", "details"),
    [
        (
            ingestion_pb2.UploadFile(filename="a" * 252 + ".png", content=png(32)),
            "filename is 256 characters, over the limit of 255",
        ),
        (
            ingestion_pb2.UploadFile(filename="a.png", content=png(32), defect_type="d" * 65),
            "defect_type is 65 characters, over the limit of 64",
        ),
    ],
)
async def test_an_upload_naming_a_file_past_its_limit_is_refused(
    file: ingestion_pb2.UploadFile, details: str
) -> None:
    objects = FakeObjects()

    code = await status_of(api(objects).Upload(upload(file), CONTEXT))

    assert code == (grpc.StatusCode.INVALID_ARGUMENT, details)


async def test_an_import_past_the_path_limit_is_refused() -> None:
    request = ingestion_pb2.ImportRequest(dataset_id="screws", path="/" + "p" * 4096)

    code = await status_of(api(FakeObjects()).Import(request, CONTEXT))

    assert code == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "path is 4097 characters, over the limit of 4096",
    )


async def test_find_images_answers_which_hashes_the_newest_version_holds() -> None:
    servicer = api(FakeObjects())
    held, other = png(32, seed=1), png(32, seed=2)
    sha = hashlib.sha256(held).hexdigest()
    missing = hashlib.sha256(other).hexdigest()

    before = await servicer.FindImages(
        ingestion_pb2.FindImagesRequest(dataset_id="screws", sha256=[sha]), CONTEXT
    )
    await servicer.Upload(upload(ingestion_pb2.UploadFile(filename="a.png", content=held)), CONTEXT)
    after = await servicer.FindImages(
        ingestion_pb2.FindImagesRequest(dataset_id="screws", sha256=[missing, sha]), CONTEXT
    )

    assert list(before.present) == []
    assert list(after.present) == [sha]


async def test_find_images_refuses_more_hashes_than_one_request_holds() -> None:
    request = ingestion_pb2.FindImagesRequest(dataset_id="screws", sha256=["0" * 64] * 4097)

    code = await status_of(api(FakeObjects()).FindImages(request, CONTEXT))

    assert code == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "4097 SHA-256s asked at once; at most 4096 per request",
    )


async def test_an_uploaded_file_keeps_its_origin_split() -> None:
    objects = FakeObjects()
    file = ingestion_pb2.UploadFile(
        filename="test/scratch_head/0.png",
        content=png(32),
        label=ingestion_pb2.LABEL_BAD,
        defect_type="scratch_head",
        origin_split=ingestion_pb2.ORIGIN_SPLIT_TEST,
    )

    await api(objects).Upload(upload(file), CONTEXT)

    manifest = Manifest.model_validate_json(
        objects.objects[(Bucket.DATASETS, "screws/v1/manifest.json")]
    )
    [image] = manifest.images
    assert (image.label, image.defect_type, image.origin_split) == (
        Label.BAD,
        "scratch_head",
        "test",
    )
