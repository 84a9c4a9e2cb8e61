"""The inspection page: upload images, see the gateway's verdict on each.

The threshold slider re-classifies the cards in the browser (static/console.js); the posted
threshold only sets where it starts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_settings import Role

from screwops_console.backends import BackendError, call
from screwops_console.config import ConsoleSettings
from screwops_console.images import thumbnail
from screwops_console.routes.common import VERDICTS, AppBackends, AppSettings, page
from screwops_console.session import needs

# Statuses that concern one uploaded file; any other (gateway down, wrong token) is about all.
PER_FILE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE}
INSPECT_CONCURRENCY = 4

router = APIRouter()


@dataclass(frozen=True)
class Card:
    """One uploaded image and the gateway's answer on it (or why there is none)."""

    filename: str
    thumbnail: str | None
    probability: float | None = None
    gateway_verdict: str = ""
    model_threshold: float | None = None
    model: str = ""
    latency_ms: float | None = None
    inspection_id: str = ""
    trace_id: str = ""
    error: str = ""

    def is_bad(self, threshold: float) -> bool:
        """The verdict at ``threshold``: defective at or above it, as the gateway decides."""
        return self.probability is not None and self.probability >= threshold


@router.get("/inspection", response_class=HTMLResponse, name="inspection")
async def inspection_form(request: Request) -> HTMLResponse:
    return page(request, "inspection.html.j2", {"cards": None, "threshold": 0.5, "form_error": ""})


@router.post("/inspection", response_class=HTMLResponse, dependencies=[needs(Role.LINE)])
async def inspect(
    request: Request,
    settings: AppSettings,
    backends: AppBackends,
    images: Annotated[list[UploadFile] | None, File()] = None,
    threshold: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5,
) -> HTMLResponse:
    uploads = [u for u in images or [] if u.filename]
    problem = _refused(request, uploads, settings)
    if problem:
        context: dict[str, Any] = {"cards": None, "threshold": threshold, "form_error": problem}
        return page(request, "inspection.html.j2", context, status_code=400)
    slots = asyncio.Semaphore(INSPECT_CONCURRENCY)
    cards = await asyncio.gather(
        *(_inspect(upload, backends.gateway, settings, slots) for upload in uploads)
    )
    failed = sum(1 for card in cards if card.error)
    context = {
        "cards": cards,
        "threshold": threshold,
        "form_error": f"{failed} of {len(cards)} images failed" if failed else "",
    }
    return page(request, "inspection.html.j2", context)


def _refused(request: Request, uploads: list[UploadFile], settings: ConsoleSettings) -> str:
    """Why the whole upload is refused before any image is sent on, or ``""``."""
    limit = settings.max_images * settings.max_image_bytes + 1024 * 1024
    if int(request.headers.get("content-length") or 0) > limit:
        return f"the upload is larger than {_size(limit)}"
    if not uploads:
        return "choose one or more images"
    if len(uploads) > settings.max_images:
        return f"at most {settings.max_images} images at once ({len(uploads)} chosen)"
    return ""


async def _inspect(
    upload: UploadFile,
    gateway: inspection_pb2_grpc.InspectionServiceAsyncStub,
    settings: ConsoleSettings,
    slots: asyncio.Semaphore,
) -> Card:
    """One image's card; its failure is its own card's error, so the others still show."""
    name = upload.filename or "image"
    data = await upload.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        return Card(name, None, error=f"larger than {_size(settings.max_image_bytes)}")
    preview = await asyncio.to_thread(thumbnail, data)
    request_id = f"console-{uuid.uuid4().hex[:12]}"
    message = inspection_pb2.InspectRequest(
        image=data,
        line_id=settings.line_id,
        camera_id=settings.camera_id,
        request_id=request_id,
    )
    began = time.perf_counter()
    async with slots:
        try:
            answer = await call("gateway", gateway.Inspect(message, timeout=settings.rpc_timeout_s))
        except BackendError as exc:
            detail = exc.details if exc.code in PER_FILE else str(exc)
            return Card(name, preview, error=detail)
    return Card(
        filename=name,
        thumbnail=preview,
        probability=answer.defect_probability,
        gateway_verdict=VERDICTS.get(answer.verdict, "?"),
        model_threshold=answer.threshold,
        model=f"{answer.model_name} v{answer.model_version}",
        latency_ms=(time.perf_counter() - began) * 1000,
        inspection_id=answer.inspection_id,
        trace_id=answer.trace_id,
    )


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.0f} KiB"
    return f"{count / (1024 * 1024):.0f} MiB"
