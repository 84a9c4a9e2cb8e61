"""What needs no login: the login page, logging out, and the liveness probe (``/healthz``, which
the stack's readiness check and the container health checks ask)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from screwops_console.accounts import AccountFile
from screwops_console.routes.common import AppSettings, page
from screwops_console.session import check_form_token, log_in, logged_in

router = APIRouter()


@router.get("/healthz")
async def healthz(settings: AppSettings) -> JSONResponse:
    """Liveness: the web app answers (the services' own health is on the overview)."""
    return JSONResponse({"status": "ok", "service": settings.service_name})


@router.get("/login", response_class=HTMLResponse, name="login")
async def login_page(
    request: Request, back_to: Annotated[str, Query(alias="next")] = "/"
) -> HTMLResponse:
    return page(request, "login.html.j2", {"next": _local(back_to), "name": "", "failed": False})


@router.post("/login", response_model=None)
async def login(
    request: Request,
    name: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    back_to: Annotated[str, Form(alias="next")] = "/",
) -> RedirectResponse | HTMLResponse:
    """Log in with a local account; a wrong name or password says which of neither."""
    await check_form_token(request)
    accounts: AccountFile = request.app.state.accounts
    account = accounts.verify(name.strip(), password)
    if account is None:
        context = {"next": _local(back_to), "name": name.strip(), "failed": True}
        return page(request, "login.html.j2", context, status_code=401)
    log_in(request, account)
    return RedirectResponse(_local(back_to), status_code=303)


@router.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    if logged_in(request) is not None:
        await check_form_token(request)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _local(target: str) -> str:
    """``target`` when it is a path of this console, else the overview: a login link cannot send
    the user on to another site."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target
