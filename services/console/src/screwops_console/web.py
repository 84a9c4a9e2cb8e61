"""The console's web app: server-rendered pages over the services' gRPC APIs.

Pages are Jinja2 templates rendered by FastAPI; forms post back and redirect (post/redirect/get),
so every page works without a script. One small static script adds what only a browser can do:
the inspection page's threshold slider re-classifies the results as it moves, and the labeling
page takes the keys 1 (good) and 2 (bad). Nothing is fetched from another origin, ever.

Every page but the login needs a logged-in account (``session``): a local one, or one an OIDC
issuer signed in (``oidc``), and each form carries the session's form token; a user acts on the
services as themselves (``session.acting_for``).

The pipeline page's rollout panel also reads the gateways' figures from Prometheus's HTTP API
(``prometheus``), the one place that sums them over every replica.

Each section of a page loads on its own: a service that is down or refuses a call shows its error
in its section and the rest of the page still works. Each page is a router of its own
(``routes/``); this module builds the app around them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from opentelemetry.metrics import MeterProvider
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.sessions import SessionMiddleware

from screwops_console.accounts import AccountFile
from screwops_console.backends import Backends
from screwops_console.config import ConsoleSettings
from screwops_console.metrics import ConsoleMetrics
from screwops_console.oidc import client
from screwops_console.prometheus import Prometheus
from screwops_console.records import ReportSource, RunSource
from screwops_console.routes import ROUTERS, login
from screwops_console.routes.common import templates
from screwops_console.session import (
    SAFE_METHODS,
    SESSION_COOKIE,
    NotLoggedInError,
    logged_in,
    session_secret,
    signed_in,
)

OPEN_POSTS = ("/login", "/logout")
"""What may be posted without a login (both still need the session's form token)."""

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


class SecurityHeaders(BaseHTTPMiddleware):
    """A strict content security policy, no form posted from another site (CSRF; the form token
    of ``session`` checks the rest), and no form body read for a POST without a login (an
    upload is refused before it is parsed)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method not in SAFE_METHODS:
            if _cross_site(request):
                return Response("cross-site form posts are refused", status_code=403)
            if request.url.path not in OPEN_POSTS and logged_in(request) is None:
                return Response("log in first", status_code=403)
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


def _cross_site(request: Request) -> bool:
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc != request.headers.get("host", "")


class RequestMetrics(BaseHTTPMiddleware):
    """Requests and their latency by route, method and HTTP status, for Prometheus."""

    def __init__(self, app: Any, meter_provider: MeterProvider | None = None) -> None:
        super().__init__(app)
        self._metrics = ConsoleMetrics(meter_provider)

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        began = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        self._metrics.answered(
            getattr(route, "path", "unmatched"),
            request.method,
            response.status_code,
            time.perf_counter() - began,
        )
        return response


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The backends' channels and the Prometheus client, opened in the loop that serves the app
    (aio channels are bound to the loop they were made in) and closed when it stops."""
    settings: ConsoleSettings = app.state.settings
    app.state.backends = Backends.connect(settings)
    app.state.prometheus = Prometheus(
        settings.stack.telemetry.prometheus_url, settings.rpc_timeout_s
    )
    try:
        yield
    finally:
        await app.state.prometheus.close()
        await app.state.backends.close()


def create_app(
    settings: ConsoleSettings,
    runs: RunSource,
    reports: ReportSource,
    *,
    meter_provider: MeterProvider | None = None,
) -> FastAPI:
    """The console's app; the gRPC channels open when it starts and close when it stops."""
    app = FastAPI(
        title="ScrewOps console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(RequestMetrics, meter_provider=meter_provider)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age_s,
        same_site="lax" if settings.oidc_configured else "strict",
        https_only=settings.cookies_secure,
    )
    app.add_exception_handler(NotLoggedInError, _to_login)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    app.state.settings = settings
    app.state.accounts = AccountFile(settings.accounts_path)
    app.state.oidc = client(settings)
    app.state.runs = runs
    app.state.reports = reports
    app.state.templates = templates()
    app.include_router(login.router)
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(signed_in)])
    return app


async def _to_login(request: Request, exc: Exception) -> Response:
    location = exc.location if isinstance(exc, NotLoggedInError) else "/login"
    return RedirectResponse(location, status_code=303)


__all__ = ["create_app"]
