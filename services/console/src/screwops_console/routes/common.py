"""What the pages share: the app's state as dependencies, rendering, redirects and sections.

``create_app`` puts the settings, the record sources and the templates on the app's state, and
its lifespan the backends (their channels are bound to the running loop); a route asks for them
as parameters, so it is a plain function of its inputs rather than a closure over the app.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined
from screwops.v1 import ingestion_pb2, inspection_pb2
from screwops_errors import ScrewOpsError

from screwops_console.backends import BackendError, Backends, call
from screwops_console.config import ConsoleSettings
from screwops_console.figures import percent
from screwops_console.prometheus import Prometheus
from screwops_console.records import ReportSource, RunSource
from screwops_console.session import form_token, logged_in

T = TypeVar("T")

VERDICTS = {inspection_pb2.VERDICT_GOOD: "GOOD", inspection_pb2.VERDICT_DEFECT: "DEFECT"}
MAX_DATASET_VERSIONS = 5000


async def _settings(request: Request) -> ConsoleSettings:
    found: ConsoleSettings = request.app.state.settings
    return found


async def _backends(request: Request) -> Backends:
    found: Backends = request.app.state.backends
    return found


async def _prometheus(request: Request) -> Prometheus:
    found: Prometheus = request.app.state.prometheus
    return found


async def _runs(request: Request) -> RunSource:
    found: RunSource = request.app.state.runs
    return found


async def _reports(request: Request) -> ReportSource:
    found: ReportSource = request.app.state.reports
    return found


AppSettings = Annotated[ConsoleSettings, Depends(_settings)]
AppBackends = Annotated[Backends, Depends(_backends)]
AppPrometheus = Annotated[Prometheus, Depends(_prometheus)]
AppRuns = Annotated[RunSource, Depends(_runs)]
AppReports = Annotated[ReportSource, Depends(_reports)]


def templates() -> Jinja2Templates:
    """The pages' templates, strict about undefined names, with the filters they format with."""
    environment = Environment(
        loader=PackageLoader("screwops_console", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = lambda value: (
        value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else "—"
    )
    environment.filters["number"] = lambda value, digits=3: (
        "—" if value is None else f"{value:.{digits}f}"
    )
    environment.filters["percent"] = lambda value: "—" if value is None else percent(value)
    return Jinja2Templates(env=environment)


def page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """Template ``name`` rendered with ``context`` and what every page shows: which page it is
    (for the menu), who is logged in, the session's form token (every form posts it back) and
    the notice or error a redirect brought along."""
    base = {
        "page": name.split(".")[0],
        "account": logged_in(request),
        "csrf_token": form_token(request),
        "notice": request.query_params.get("notice", ""),
        "error": request.query_params.get("error", ""),
    }
    rendering: Jinja2Templates = request.app.state.templates
    return rendering.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def redirect(path: str, **query: str | int) -> RedirectResponse:
    """See other ``path`` (post/redirect/get)."""
    kept = {name: value for name, value in query.items() if value not in ("", None)}
    target = f"{path}?{urlencode(kept)}" if kept else path
    return RedirectResponse(target, status_code=303)


@dataclass
class Section:
    """One independently loaded part of a page: its data, or the error that kept it empty."""

    error: str = ""
    items: list[Any] = field(default_factory=list)
    total: int = 0


async def load(loader: Awaitable[list[T]]) -> Section:
    """A section of what ``loader`` finds, or of why a service could not answer."""
    try:
        return Section(items=list(await loader))
    except BackendError as exc:
        return Section(error=str(exc))
    except ScrewOpsError as exc:
        return Section(error=f"{exc.status.name}: {exc.message}")


async def dataset_versions(
    backends: Backends, settings: ConsoleSettings
) -> list[ingestion_pb2.DatasetVersion]:
    """Every dataset version ingestion lists, up to a bound a page can still show."""
    versions: list[ingestion_pb2.DatasetVersion] = []
    token = ""
    while len(versions) < MAX_DATASET_VERSIONS:
        answer = await call(
            "ingestion",
            backends.ingestion.ListDatasets(
                ingestion_pb2.ListDatasetsRequest(page_size=500, page_token=token),
                timeout=settings.rpc_timeout_s,
            ),
        )
        versions.extend(answer.versions)
        token = answer.next_page_token
        if not token:
            break
    return versions
