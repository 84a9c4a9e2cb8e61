"""The labeling gRPC API: a thin adapter over :class:`LabelingService`.

It turns proto enums and timestamps into the domain's types and back, refuses what the proto
calls required but leaves unset, and lets :func:`screwops_rpc.map_errors` give each typed error
its status. CloseVersion is not idempotent: it closes whichever version is open when it arrives,
so a client retries it only after checking which version is open.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from screwops.v1 import ingestion_pb2, inspection_pb2, labeling_pb2, labeling_pb2_grpc
from screwops_contracts.datasets import Label
from screwops_contracts.limits import MAX_ID_CHARS, MAX_NAME_CHARS, MAX_REASON_CHARS, bounded
from screwops_errors import InvalidInputError
from screwops_rpc import ServedApi, current_principal, map_errors, method_roles
from screwops_settings import Role

from screwops_labeling.label_files import LabelFileFormat
from screwops_labeling.service import LabelingService
from screwops_labeling.store import ReviewItem

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = labeling_pb2.DESCRIPTOR.services_by_name["LabelingService"].full_name
ROLES = method_roles(
    SERVICE_NAME,
    {
        "NextUnlabeled": Role.LABELER,  # reserves an image for the caller
        "SubmitLabel": Role.LABELER,
        "ImportLabels": Role.LABELER,
        "ListReviewQueue": Role.VIEWER,
        "SubmitReview": Role.LABELER,
        # Closing a version freezes a dataset and starts validation and training.
        "CloseVersion": Role.OPERATOR,
    },
)

_LABELS = {ingestion_pb2.LABEL_GOOD: Label.GOOD, ingestion_pb2.LABEL_BAD: Label.BAD}
_FORMATS = {
    labeling_pb2.LABEL_FORMAT_CSV: LabelFileFormat.CSV,
    labeling_pb2.LABEL_FORMAT_LABEL_STUDIO_JSON: LabelFileFormat.LABEL_STUDIO_JSON,
    labeling_pb2.LABEL_FORMAT_LABEL_STUDIO_JSON_MIN: LabelFileFormat.LABEL_STUDIO_JSON_MIN,
}
_VERDICTS = {"GOOD": inspection_pb2.VERDICT_GOOD, "DEFECT": inspection_pb2.VERDICT_DEFECT}


def _person(named: str) -> str:
    """Who labels or reviews: the user a delegating principal (the console) acts for, whatever
    name the request gives, so a console user cannot label as someone else; the request's name
    for any other caller, which labels for the people it names (a label file's annotator)."""
    caller = current_principal()
    return caller.name if caller is not None and caller.via else named


class LabelingApi(labeling_pb2_grpc.LabelingServiceServicer):
    """Validates requests, delegates to the service, and renders its results."""

    def __init__(self, service: LabelingService) -> None:
        self._service = service

    @map_errors
    async def NextUnlabeled(  # noqa: N802 (the proto's method name)
        self, request: labeling_pb2.NextUnlabeledRequest, context: Context
    ) -> labeling_pb2.LabelTask:
        _bound_who(request.dataset_id, "annotator", request.annotator)
        task = await self._service.next_unlabeled(request.dataset_id, _person(request.annotator))
        return labeling_pb2.LabelTask(
            image_sha256=task.image.sha256,
            dataset_id=task.image.dataset_id,
            dataset_version=task.image.version,
            image=task.data,
            object_key=task.image.key,
            filename=task.image.filename,
            reserved_until=_timestamp(task.reserved_until),
            remaining_count=task.remaining,
        )

    @map_errors
    async def SubmitLabel(  # noqa: N802
        self, request: labeling_pb2.SubmitLabelRequest, context: Context
    ) -> labeling_pb2.SubmitLabelResponse:
        _bound_who(request.dataset_id, "annotator", request.annotator)
        bounded("defect_type", request.defect_type, MAX_ID_CHARS)
        remaining = await self._service.submit_label(
            request.dataset_id,
            request.image_sha256,
            _label(request.label),
            annotator=_person(request.annotator),
            defect_type=request.defect_type if request.HasField("defect_type") else None,
            labeled_at=_datetime(request.labeled_at) if request.HasField("labeled_at") else None,
        )
        return labeling_pb2.SubmitLabelResponse(remaining_count=remaining)

    @map_errors
    async def ImportLabels(  # noqa: N802
        self, request: labeling_pb2.ImportLabelsRequest, context: Context
    ) -> labeling_pb2.ImportLabelsResponse:
        fmt = _FORMATS.get(request.format)
        if fmt is None:
            raise InvalidInputError(
                "format is required: LABEL_FORMAT_CSV, LABEL_FORMAT_LABEL_STUDIO_JSON or "
                "LABEL_FORMAT_LABEL_STUDIO_JSON_MIN"
            )
        _bound_who(request.dataset_id, "annotator", request.annotator)
        report = await self._service.import_labels(
            request.dataset_id, fmt, request.content, annotator=_person(request.annotator)
        )
        return labeling_pb2.ImportLabelsResponse(
            applied_count=report.applied,
            unchanged_count=report.unchanged,
            unmatched_count=report.unmatched,
            invalid_count=report.invalid,
            problems=[
                labeling_pb2.LabelImportProblem(
                    row=problem.row, reference=problem.reference, reason=problem.reason
                )
                for problem in report.problems
            ],
            remaining_count=report.remaining,
        )

    @map_errors
    async def ListReviewQueue(  # noqa: N802
        self, request: labeling_pb2.ListReviewQueueRequest, context: Context
    ) -> labeling_pb2.ListReviewQueueResponse:
        bounded("line_id", request.line_id, MAX_ID_CHARS)
        page = await self._service.review_queue(
            request.line_id,
            include_images=request.include_images,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return labeling_pb2.ListReviewQueueResponse(
            review_items=[
                _review_item(item, page.images.get(item.inspection_id)) for item in page.items
            ],
            next_page_token=page.next_token,
            total_size=page.total,
        )

    @map_errors
    async def SubmitReview(  # noqa: N802
        self, request: labeling_pb2.SubmitReviewRequest, context: Context
    ) -> labeling_pb2.SubmitReviewResponse:
        bounded("inspection_id", request.inspection_id, MAX_NAME_CHARS)
        bounded("reviewer", request.reviewer, MAX_NAME_CHARS)
        bounded("defect_type", request.defect_type, MAX_ID_CHARS)
        result = await self._service.submit_review(
            request.inspection_id,
            _label(request.label),
            reviewer=_person(request.reviewer),
            defect_type=request.defect_type if request.HasField("defect_type") else None,
            reviewed_at=_datetime(request.reviewed_at) if request.HasField("reviewed_at") else None,
        )
        return labeling_pb2.SubmitReviewResponse(
            verdict_correct=result.verdict_correct, remaining_count=result.remaining
        )

    @map_errors
    async def CloseVersion(  # noqa: N802
        self, request: labeling_pb2.CloseVersionRequest, context: Context
    ) -> labeling_pb2.CloseVersionResponse:
        _bound_who(request.dataset_id, "operator", request.operator)
        bounded("reason", request.reason, MAX_REASON_CHARS)
        closed = await self._service.close_version(
            request.dataset_id,
            request.operator,
            request.reason,
            request.version if request.HasField("version") else None,
        )
        return labeling_pb2.CloseVersionResponse(
            dataset_id=closed.dataset_id,
            closed_version=closed.closed_version,
            open_version=closed.open_version,
            labeled_count=closed.labeled_count,
            excluded_count=closed.excluded_count,
            closed_at=_timestamp(closed.closed_at),
        )


server = ServedApi(
    name=SERVICE_NAME,
    add=labeling_pb2_grpc.add_LabelingServiceServicer_to_server,
    servicer=LabelingApi,
).server


def _bound_who(dataset_id: str, role: str, who: str) -> None:
    bounded("dataset_id", dataset_id, MAX_ID_CHARS)
    bounded(role, who, MAX_NAME_CHARS)


def _label(value: ingestion_pb2.Label.ValueType) -> Label:
    label = _LABELS.get(value)
    if label is None:
        raise InvalidInputError("label is required: LABEL_GOOD or LABEL_BAD")
    return label


def _review_item(item: ReviewItem, image: bytes | None) -> labeling_pb2.ReviewItem:
    return labeling_pb2.ReviewItem(
        inspection_id=item.inspection_id,
        image_sha256=item.image_sha256 or "",
        object_key=item.object_key,
        image=image or b"",
        line_id=item.line_id,
        camera_id=item.camera_id,
        verdict=_VERDICTS[item.verdict],
        defect_probability=item.defect_probability,
        threshold=item.threshold,
        model_name=item.model_name,
        model_version=item.model_version,
        inspected_at=_timestamp(item.inspected_at),
        queue_reason=item.queue_reason,
    )


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _datetime(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)
