"""The labeling page: label the next unlabeled image of a dataset, review the gateway's
verdicts waiting in the review queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import grpc
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from screwops.v1 import ingestion_pb2, labeling_pb2
from screwops_contracts.datasets import DEFECT_TYPES
from screwops_settings import Role

from screwops_console.accounts import Account
from screwops_console.backends import BackendError, Backends, call
from screwops_console.config import ConsoleSettings
from screwops_console.images import data_uri
from screwops_console.routes.common import (
    VERDICTS,
    AppBackends,
    AppSettings,
    Section,
    dataset_versions,
    load,
    page,
    redirect,
)
from screwops_console.session import Labeler, SignedIn, acting_for

T = TypeVar("T")

LABELS = {"good": ingestion_pb2.LABEL_GOOD, "bad": ingestion_pb2.LABEL_BAD}

router = APIRouter()


@dataclass(frozen=True)
class DatasetChoice:
    """A dataset as the page's list offers it: labels go to its open version, so one entry per
    dataset, with its newest version to tell them apart."""

    dataset_id: str
    newest: int
    images: int
    versions: int


@router.get("/labeling", response_class=HTMLResponse, name="labeling")
async def labeling(
    request: Request,
    settings: AppSettings,
    backends: AppBackends,
    account: SignedIn,
    dataset: str = "",
) -> HTMLResponse:
    """The next image for the logged-in user to label (a labeler's: it reserves the image), and
    the review queue."""
    may_label = account.role.allows(Role.LABELER)
    datasets, tasks, reviews = await asyncio.gather(
        load(_datasets(backends, settings)),
        load(_task(backends, settings, dataset, account if may_label else None)),
        _queue(backends, settings),
    )
    current = tasks.items[0] if tasks.items else None
    context = {
        "dataset": dataset,
        "may_label": may_label,
        "datasets": datasets,
        "task": current,
        "task_error": tasks.error,
        "task_image": data_uri(current.image) if current is not None else None,
        "reviews": reviews,
        "defect_types": DEFECT_TYPES,
        "verdicts": VERDICTS,
    }
    return page(request, "labeling.html.j2", context)


async def _datasets(backends: Backends, settings: ConsoleSettings) -> list[DatasetChoice]:
    """Every dataset ingestion knows, by id, for the page's list."""
    found: dict[str, list[ingestion_pb2.DatasetVersion]] = {}
    for version in await dataset_versions(backends, settings):
        found.setdefault(version.dataset_id, []).append(version)
    choices = []
    for dataset_id, versions in sorted(found.items()):
        newest = max(versions, key=lambda v: v.version)
        choices.append(DatasetChoice(dataset_id, newest.version, newest.image_count, len(versions)))
    return choices


async def _task(
    backends: Backends, settings: ConsoleSettings, dataset: str, annotator: Account | None
) -> list[labeling_pb2.LabelTask]:
    """The next image for ``annotator`` to label in ``dataset``; none when all are labeled."""
    if not dataset or annotator is None:
        return []
    try:
        found = await call(
            "labeling",
            backends.labeling.NextUnlabeled(
                labeling_pb2.NextUnlabeledRequest(dataset_id=dataset, annotator=annotator.name),
                timeout=settings.rpc_timeout_s,
                metadata=acting_for(annotator),
            ),
        )
    except BackendError as exc:
        if exc.code == grpc.StatusCode.NOT_FOUND:
            return []
        raise
    return [found]


async def _queue(backends: Backends, settings: ConsoleSettings) -> Section:
    """The review queue's first page, each item with its image, and the queue's length."""
    try:
        answer = await call(
            "labeling",
            backends.labeling.ListReviewQueue(
                labeling_pb2.ListReviewQueueRequest(
                    include_images=True, page_size=settings.review_page_size
                ),
                timeout=settings.rpc_timeout_s,
            ),
        )
    except BackendError as exc:
        return Section(error=str(exc))
    items = [(item, data_uri(item.image)) for item in answer.review_items]
    return Section(items=items, total=answer.total_size)


@router.post("/labeling/label")
async def submit_label(
    settings: AppSettings,
    backends: AppBackends,
    account: Labeler,
    image_sha256: Annotated[str, Form()] = "",
    dataset: Annotated[str, Form()] = "",
    label: Annotated[str, Form()] = "",
    defect_type: Annotated[str, Form()] = "",
    filename: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Record the logged-in labeler's label: labeling records them as its annotator."""
    back = {"dataset": dataset}
    if label not in LABELS or not (image_sha256 and dataset):
        return redirect("/labeling", error="a label needs an image, a dataset and a label", **back)
    message = labeling_pb2.SubmitLabelRequest(
        image_sha256=image_sha256,
        dataset_id=dataset,
        label=LABELS[label],
        annotator=account.name,
        defect_type=(defect_type.strip() or None) if label == "bad" else None,
    )
    message.labeled_at.GetCurrentTime()
    done = f"labeled {filename or image_sha256[:12]} {label}"
    return await _submit(
        backends.labeling.SubmitLabel(
            message, timeout=settings.rpc_timeout_s, metadata=acting_for(account)
        ),
        back,
        lambda answer: f"{done}; {answer.remaining_count} left to label",
    )


@router.post("/labeling/review")
async def submit_review(
    settings: AppSettings,
    backends: AppBackends,
    account: Labeler,
    inspection_id: Annotated[str, Form()] = "",
    label: Annotated[str, Form()] = "",
    dataset: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Record the logged-in labeler's review: labeling records them as its reviewer."""
    back = {"dataset": dataset}
    if label not in LABELS or not inspection_id:
        return redirect("/labeling", error="a review needs an inspection and a label", **back)
    message = labeling_pb2.SubmitReviewRequest(
        inspection_id=inspection_id, label=LABELS[label], reviewer=account.name
    )
    message.reviewed_at.GetCurrentTime()
    return await _submit(
        backends.labeling.SubmitReview(
            message, timeout=settings.rpc_timeout_s, metadata=acting_for(account)
        ),
        back,
        lambda answer: (
            "review recorded: the model was "
            f"{'right' if answer.verdict_correct else 'wrong'}; {answer.remaining_count} left "
            "in the queue"
        ),
    )


async def _submit(
    pending: Awaitable[T], back: dict[str, str], notice: Callable[[T], str]
) -> RedirectResponse:
    """Post/redirect/get back to the labeling page, with the answer's ``notice`` or why the
    labeling service refused."""
    try:
        answer = await call("labeling", pending)
    except BackendError as exc:
        return redirect("/labeling", error=str(exc), **back)
    return redirect("/labeling", notice=notice(answer), **back)
