"""The ingestion servicer without a network: over-long text is refused before anything is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest
from screwops.v1 import ingestion_pb2
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
