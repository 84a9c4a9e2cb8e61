"""The overview: each service's address and gRPC health."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from screwops_console.routes.common import AppBackends, AppSettings, page

router = APIRouter()


@router.get("/", response_class=HTMLResponse, name="overview")
async def overview(request: Request, settings: AppSettings, backends: AppBackends) -> HTMLResponse:
    health = await backends.health(deadline_s=min(settings.rpc_timeout_s, 2.0))
    addresses = {
        "gateway": settings.gateway_address,
        "ingestion": settings.ingestion_address,
        "labeling": settings.labeling_address,
        "registry": settings.registry_address,
    }
    return page(request, "overview.html.j2", {"health": health, "addresses": addresses})
