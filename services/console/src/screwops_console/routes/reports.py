"""A dataset version's validation report, served as validation rendered it."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from screwops_errors import ScrewOpsError

from screwops_console.records import DATASET_ID
from screwops_console.routes.common import AppReports

# Validation's report is one self-contained page with inline CSS and no scripts.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"

router = APIRouter()


@router.get("/reports/{dataset_id}/v{version}", name="report")
async def report(dataset_id: str, version: int, reports: AppReports) -> Response:
    """A dataset version's validation report, as validation rendered it."""
    if not DATASET_ID.fullmatch(dataset_id) or dataset_id in {".", ".."} or version < 1:
        return Response("no such report", status_code=404, media_type="text/plain")
    try:
        body = await reports.html(dataset_id, version)
    except ScrewOpsError as exc:
        return Response(f"{exc.status.name}: {exc.message}", status_code=503)
    if body is None:
        return Response(
            f"{dataset_id} v{version} has no validation report (yet)",
            status_code=404,
            media_type="text/plain",
        )
    return HTMLResponse(body, headers={"Content-Security-Policy": REPORT_CSP})
