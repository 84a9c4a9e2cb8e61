"""The ingestion gRPC API: a thin adapter over :class:`IngestionService`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from screwops.v1 import ingestion_pb2, ingestion_pb2_grpc
from screwops_contracts.datasets import Label, OriginSplit
from screwops_contracts.layouts import IncomingFile, Layout
from screwops_contracts.limits import (
    MAX_FILENAME_CHARS,
    MAX_ID_CHARS,
    MAX_PATH_CHARS,
    bounded,
)
from screwops_errors import InvalidInputError
from screwops_rpc import ServedApi, map_errors, method_roles, offset_page
from screwops_settings import Role

from screwops_ingestion.service import IngestionService, IngestResult, Outcome
from screwops_ingestion.store import VersionRecord

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = ingestion_pb2.DESCRIPTOR.services_by_name["IngestionService"].full_name
ROLES = method_roles(
    SERVICE_NAME,
    {
        "Upload": Role.OPERATOR,
        "Import": Role.OPERATOR,
        "GetDataset": Role.VIEWER,
        "ListDatasets": Role.VIEWER,
        "FindImages": Role.VIEWER,
    },
)

_LABELS = {ingestion_pb2.LABEL_GOOD: Label.GOOD, ingestion_pb2.LABEL_BAD: Label.BAD}
_SPLITS: dict[int, OriginSplit] = {
    ingestion_pb2.ORIGIN_SPLIT_TRAIN: "train",
    ingestion_pb2.ORIGIN_SPLIT_TEST: "test",
}
_LAYOUTS = {
    ingestion_pb2.LAYOUT_UNSPECIFIED: Layout.AUTO,
    ingestion_pb2.LAYOUT_AUTO: Layout.AUTO,
    ingestion_pb2.LAYOUT_CLASS_FOLDERS: Layout.CLASS_FOLDERS,
    ingestion_pb2.LAYOUT_MVTEC: Layout.MVTEC,
    ingestion_pb2.LAYOUT_CSV: Layout.CSV,
}
_STATUSES = {
    Outcome.ACCEPTED: ingestion_pb2.FILE_STATUS_ACCEPTED,
    Outcome.DUPLICATE: ingestion_pb2.FILE_STATUS_DUPLICATE,
    Outcome.REFUSED: ingestion_pb2.FILE_STATUS_REFUSED,
}
DEFAULT_PAGE = 50
MAX_PAGE = 500
MAX_FIND = 4096
"""SHA-256s per FindImages request (ingestion.proto): 64 characters each, far below a message."""


class IngestionApi(ingestion_pb2_grpc.IngestionServiceServicer):
    """Validates requests, delegates to the service, and renders its results."""

    def __init__(self, service: IngestionService) -> None:
        self._service = service

    @map_errors
    async def Upload(  # noqa: N802 (the proto's method name)
        self, request_iterator: AsyncIterator[ingestion_pb2.UploadRequest], context: Context
    ) -> ingestion_pb2.ImportResult:
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidInputError("an upload starts with a header naming the dataset")
        header = first.header
        default = _LABELS.get(header.default_label) if header.HasField("default_label") else None

        async def files() -> AsyncIterator[IncomingFile]:
            async for message in request_iterator:
                if message.WhichOneof("payload") != "file":
                    raise InvalidInputError("only the first message of an upload is a header")
                file = message.file
                bounded("filename", file.filename, MAX_FILENAME_CHARS)
                bounded("defect_type", file.defect_type, MAX_ID_CHARS)
                label = _LABELS.get(file.label) if file.HasField("label") else default
                yield IncomingFile(
                    filename=file.filename or "(unnamed)",
                    data=file.content,
                    label=label,
                    defect_type=file.defect_type or None,
                    origin_split=_SPLITS.get(file.origin_split),
                )

        result = await self._service.ingest(header.dataset_id, files(), source="upload")
        return _result(result)

    @map_errors
    async def Import(  # noqa: N802
        self, request: ingestion_pb2.ImportRequest, context: Context
    ) -> ingestion_pb2.ImportResult:
        if not request.path:
            raise InvalidInputError("path is required")
        bounded("path", request.path, MAX_PATH_CHARS)
        result = await self._service.import_path(
            request.dataset_id,
            request.path,
            _LAYOUTS[request.layout],
            _label_map(request.label_map),
        )
        return _result(result)

    @map_errors
    async def GetDataset(  # noqa: N802
        self, request: ingestion_pb2.GetDatasetRequest, context: Context
    ) -> ingestion_pb2.DatasetVersion:
        version = request.version if request.HasField("version") else None
        return _version(await self._service.get_version(request.dataset_id, version))

    @map_errors
    async def ListDatasets(  # noqa: N802
        self, request: ingestion_pb2.ListDatasetsRequest, context: Context
    ) -> ingestion_pb2.ListDatasetsResponse:
        offset, limit = offset_page(
            request.page_size, request.page_token, default=DEFAULT_PAGE, most=MAX_PAGE
        )
        versions = await self._service.list_versions(offset=offset, limit=limit + 1)
        more = len(versions) > limit
        return ingestion_pb2.ListDatasetsResponse(
            versions=[_version(v) for v in versions[:limit]],
            next_page_token=str(offset + limit) if more else "",
        )

    @map_errors
    async def FindImages(  # noqa: N802
        self, request: ingestion_pb2.FindImagesRequest, context: Context
    ) -> ingestion_pb2.FindImagesResponse:
        if len(request.sha256) > MAX_FIND:
            raise InvalidInputError(
                f"{len(request.sha256)} SHA-256s asked at once; at most {MAX_FIND} per request"
            )
        present = await self._service.find_images(request.dataset_id, list(request.sha256))
        return ingestion_pb2.FindImagesResponse(present=present)


server = ServedApi(
    name=SERVICE_NAME,
    add=ingestion_pb2_grpc.add_IngestionServiceServicer_to_server,
    servicer=IngestionApi,
).server


def _label_map(entries: Mapping[str, ingestion_pb2.Label.ValueType]) -> dict[str, Label]:
    """The request's label map by lower-case word; an entry without a label is refused, since
    an import that silently ignored it would leave that folder's images unlabeled."""
    mapping: dict[str, Label] = {}
    for word, label in entries.items():
        key = bounded("label map word", word, MAX_ID_CHARS).strip().lower()
        if not key or label not in _LABELS:
            raise InvalidInputError(
                f"label map entry {word!r} must name a word and a label (good or bad)"
            )
        mapping[key] = _LABELS[label]
    return mapping


def _result(result: IngestResult) -> ingestion_pb2.ImportResult:
    return ingestion_pb2.ImportResult(
        dataset_id=result.dataset_id,
        dataset_version=result.version or 0,
        accepted_count=result.count(Outcome.ACCEPTED),
        duplicate_count=result.count(Outcome.DUPLICATE),
        refused_count=result.count(Outcome.REFUSED),
        files=[
            ingestion_pb2.FileOutcome(
                filename=f.filename, sha256=f.sha256, status=_STATUSES[f.status], reason=f.reason
            )
            for f in result.files
        ],
        created=result.created,
    )


def _version(record: VersionRecord) -> ingestion_pb2.DatasetVersion:
    created = Timestamp()
    created.FromDatetime(record.created_at)
    return ingestion_pb2.DatasetVersion(
        dataset_id=record.dataset_id,
        version=record.version,
        image_count=record.image_count,
        added_count=record.added_count,
        manifest_key=record.manifest_key,
        created_at=created,
        correlation_id=record.event.correlation_id,
    )
