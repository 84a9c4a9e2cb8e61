"""The home page, what a line supervisor opens first: per model the console serves, the
version in production and its threshold, how fast the line inspects and how often it rejects
against the model's baseline, the monitor's signals and the alerts firing, and the training
run in progress; below, each service's address and gRPC health.

Each part loads on its own (``Section``), so Prometheus down leaves the registry's and the
runs' parts standing, and the registry down leaves the figures.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from screwops_contracts.runs import RunRecord

from screwops_console.backends import Backends
from screwops_console.config import ConsoleSettings
from screwops_console.prometheus import Prometheus
from screwops_console.records import RunSource
from screwops_console.routes.common import (
    AppBackends,
    AppPrometheus,
    AppRuns,
    AppSettings,
    Section,
    load,
    page,
)
from screwops_console.routes.pipeline import VersionRow, model_versions
from screwops_console.supervision import STACK, Alert, LineFigures, line_figures, open_alerts

router = APIRouter()


@dataclass(frozen=True)
class ModelHome:
    """One model's part of the home page."""

    model_name: str
    versions: Section
    figures: Section
    runs: Section

    @property
    def production(self) -> VersionRow | None:
        return next((v for v in self.versions.items if v.in_production), None)

    @property
    def running(self) -> list[RunRecord]:
        return [run for run in self.runs.items if run.status == "running"]

    @property
    def last_run(self) -> RunRecord | None:
        return next(iter(self.runs.items), None)


@router.get("/", response_class=HTMLResponse, name="overview")
async def overview(
    request: Request,
    settings: AppSettings,
    backends: AppBackends,
    runs: AppRuns,
    prometheus: AppPrometheus,
) -> HTMLResponse:
    now = datetime.now(UTC)
    health, alerts, models = await asyncio.gather(
        backends.health(deadline_s=min(settings.rpc_timeout_s, 2.0)),
        load(_alerts(prometheus, now)),
        asyncio.gather(
            *(_model(name, settings, backends, runs, prometheus, now) for name in _served(settings))
        ),
    )
    addresses = {
        "gateway": settings.gateway_address,
        "ingestion": settings.ingestion_address,
        "labeling": settings.labeling_address,
        "registry": settings.registry_address,
    }
    context = {
        "health": health,
        "addresses": addresses,
        "models": models,
        "alerts": alerts,
        "stack_alerts": alerts.items[0].get(STACK, []) if alerts.items else [],
    }
    return page(request, "overview.html.j2", context)


def _served(settings: ConsoleSettings) -> list[str]:
    """The model names the console serves: the one its pages promote, roll out and label for."""
    return [settings.model_name]


async def _model(
    model_name: str,
    settings: ConsoleSettings,
    backends: Backends,
    runs: RunSource,
    prometheus: Prometheus,
    now: datetime,
) -> ModelHome:
    async def mine() -> list[RunRecord]:
        return [r for r in await runs.list_runs(settings.runs_shown) if r.model_name == model_name]

    versions, run_section = await asyncio.gather(
        load(model_versions(backends, settings, model_name)), load(mine())
    )
    production = next((v for v in versions.items if v.in_production), None)

    async def figures() -> list[LineFigures]:
        version = production.version if production is not None else None
        return [await line_figures(prometheus, model_name, version, now)]

    return ModelHome(
        model_name=model_name,
        versions=versions,
        figures=await load(figures()),
        runs=run_section,
    )


async def _alerts(prometheus: Prometheus, now: datetime) -> list[dict[str, list[Alert]]]:
    return [await open_alerts(prometheus, now)]
