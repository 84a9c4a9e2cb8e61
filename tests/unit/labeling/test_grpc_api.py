"""The labeling servicer without a network: proto fields in, domain calls, statuses out."""

from __future__ import annotations

from typing import Any, cast

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import SecretStr
from screwops.v1 import ingestion_pb2, inspection_pb2, labeling_pb2, labeling_pb2_grpc
from screwops_contracts.datasets import Label
from screwops_labeling.grpc_api import ROLES, Context, LabelingApi, server
from screwops_rpc import bearer_auth, on_behalf_of, open_aio_channel
from screwops_settings import ApiToken, Role

from tests.fakes import AbortedError, FakeContext
from tests.unit.labeling.fakes import START, harness, inspection

CONTEXT = cast(Context, FakeContext())


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(AbortedError) as aborted:
        await call
    return aborted.value.code, aborted.value.details


async def test_an_annotator_labels_through_the_api() -> None:
    h = harness()
    api = LabelingApi(h.service)
    event, _ = h.ingest("screws", 1, [("a.png", None), ("b.png", Label.GOOD)])
    await h.service.on_dataset_ingested(event)

    task = await api.NextUnlabeled(
        labeling_pb2.NextUnlabeledRequest(dataset_id="screws", annotator="ana"), CONTEXT
    )
    labeled_at = Timestamp()
    labeled_at.FromDatetime(START)
    response = await api.SubmitLabel(
        labeling_pb2.SubmitLabelRequest(
            image_sha256=task.image_sha256,
            dataset_id="screws",
            label=ingestion_pb2.LABEL_BAD,
            defect_type="thread_side",
            annotator="ana",
            labeled_at=labeled_at,
        ),
        CONTEXT,
    )

    assert (task.filename, task.dataset_version, task.remaining_count) == ("a.png", 1, 1)
    assert task.image == b"screws/a.png"
    assert task.reserved_until.ToDatetime().isoformat() == "2026-11-24T10:10:00"
    assert response.remaining_count == 0
    label = h.store.label_docs[("screws", task.image_sha256)]
    assert (label.label, label.defect_type, label.labeled_at) == (Label.BAD, "thread_side", START)


@pytest.mark.parametrize(
    ("request_", "code", "details"),
    [
        (
            labeling_pb2.SubmitLabelRequest(image_sha256="a" * 64, dataset_id="s", annotator="a"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "label is required: LABEL_GOOD or LABEL_BAD",
        ),
        (
            labeling_pb2.SubmitLabelRequest(
                image_sha256="a" * 64,
                dataset_id="nope",
                annotator="a",
                label=ingestion_pb2.LABEL_GOOD,
            ),
            grpc.StatusCode.NOT_FOUND,
            "unknown dataset 'nope': no version of it was ingested",
        ),
        (
            labeling_pb2.ImportLabelsRequest(dataset_id="s", annotator="a", content=b"x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "format is required: LABEL_FORMAT_CSV, LABEL_FORMAT_LABEL_STUDIO_JSON or "
            "LABEL_FORMAT_LABEL_STUDIO_JSON_MIN",
        ),
        (
            labeling_pb2.CloseVersionRequest(dataset_id="s"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "operator is required",
        ),
        (
            labeling_pb2.ListReviewQueueRequest(page_size=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size must not be negative",
        ),
        (
            labeling_pb2.CloseVersionRequest(dataset_id="s", operator="o", reason="r" * 1025),
            grpc.StatusCode.INVALID_ARGUMENT,
            "reason is 1025 characters, over the limit of 1024",
        ),
        (
            labeling_pb2.NextUnlabeledRequest(dataset_id="s", annotator="a" * 129),
            grpc.StatusCode.INVALID_ARGUMENT,
            "annotator is 129 characters, over the limit of 128",
        ),
        (
            labeling_pb2.SubmitLabelRequest(
                dataset_id="s", annotator="a", label=ingestion_pb2.LABEL_BAD, defect_type="d" * 65
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "defect_type is 65 characters, over the limit of 64",
        ),
        (
            labeling_pb2.ImportLabelsRequest(
                dataset_id="s" * 65,
                annotator="a",
                content=b"x",
                format=labeling_pb2.LABEL_FORMAT_CSV,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "dataset_id is 65 characters, over the limit of 64",
        ),
        (
            labeling_pb2.SubmitReviewRequest(inspection_id="i", reviewer="r" * 129),
            grpc.StatusCode.INVALID_ARGUMENT,
            "reviewer is 129 characters, over the limit of 128",
        ),
        (
            labeling_pb2.ListReviewQueueRequest(line_id="l" * 65),
            grpc.StatusCode.INVALID_ARGUMENT,
            "line_id is 65 characters, over the limit of 64",
        ),
    ],
)
async def test_each_error_becomes_its_status(
    request_: Any, code: grpc.StatusCode, details: str
) -> None:
    api = LabelingApi(harness().service)
    # SubmitLabelRequest -> SubmitLabel, ...
    method = getattr(api, type(request_).__name__.removesuffix("Request"))

    assert await status_of(method(request_, CONTEXT)) == (code, details)


async def test_a_reviewer_works_through_the_queue() -> None:
    h = harness()
    api = LabelingApi(h.service)
    queued = inspection(verdict="DEFECT", probability=0.55)
    await h.service.on_inspection_completed(queued)

    page = await api.ListReviewQueue(labeling_pb2.ListReviewQueueRequest(), CONTEXT)
    [item] = page.review_items
    result = await api.SubmitReview(
        labeling_pb2.SubmitReviewRequest(
            inspection_id=item.inspection_id, label=ingestion_pb2.LABEL_GOOD, reviewer="rev"
        ),
        CONTEXT,
    )

    assert item.inspection_id == str(queued.event_id)
    assert item.verdict == inspection_pb2.VERDICT_DEFECT
    assert item.defect_probability == pytest.approx(0.55)
    assert item.inspected_at.ToDatetime().replace(microsecond=0) == (
        queued.occurred_at.replace(tzinfo=None, microsecond=0)
    )
    assert (page.total_size, page.next_page_token) == (1, "")
    assert (result.verdict_correct, result.remaining_count) == (False, 0)
    # No version of the review dataset exists yet: the label waits for the image to arrive.
    assert h.store.label_docs[("screws", item.image_sha256)].source == "review"


CONSOLE_TOKEN = "console-token-0123456789ab"
LABELER_TOKEN = "labeler-token-0123456789ab"


async def test_the_console_labels_as_its_logged_in_user_and_no_one_else_may_name_one() -> None:
    h = harness()
    event, _ = h.ingest("screws", 1, [("a.png", None), ("b.png", None)])
    await h.service.on_dataset_ingested(event)
    table = [
        ApiToken(
            principal="console", role=Role.LABELER, token=SecretStr(CONSOLE_TOKEN), delegates=True
        ),
        ApiToken(principal="tool", role=Role.LABELER, token=SecretStr(LABELER_TOKEN)),
    ]
    running = server(h.service, host="127.0.0.1", port=0, interceptors=bearer_auth(table, ROLES))
    await running.start()
    address = f"127.0.0.1:{running.port}"
    try:
        async with open_aio_channel(address, CONSOLE_TOKEN) as channel:
            labeling = labeling_pb2_grpc.LabelingServiceStub(channel)
            task = await labeling.NextUnlabeled(
                labeling_pb2.NextUnlabeledRequest(dataset_id="screws", annotator="mallory"),
                timeout=5,
                metadata=on_behalf_of("ana", Role.LABELER),
            )
            await labeling.SubmitLabel(
                labeling_pb2.SubmitLabelRequest(
                    image_sha256=task.image_sha256,
                    dataset_id="screws",
                    label=ingestion_pb2.LABEL_GOOD,
                    annotator="mallory",
                ),
                timeout=5,
                metadata=on_behalf_of("ana", Role.LABELER),
            )
        async with open_aio_channel(address, LABELER_TOKEN) as channel:
            labeling = labeling_pb2_grpc.LabelingServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await labeling.NextUnlabeled(
                    labeling_pb2.NextUnlabeledRequest(dataset_id="screws", annotator="tool"),
                    timeout=5,
                    metadata=on_behalf_of("ana", Role.LABELER),
                )
    finally:
        await running.stop(grace=0)

    assert h.store.label_docs[("screws", task.image_sha256)].annotator == "ana (via console)"
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == "tool may not act on behalf of another user"
