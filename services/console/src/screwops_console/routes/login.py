"""What needs no login: the login page, signing in through the OIDC issuer, logging out, and the
liveness probe (``/healthz``, which the stack's readiness check and the container health checks
ask)."""

from __future__ import annotations

import logging
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx2
from authlib.integrations.starlette_client import OAuthError, StarletteOAuth2App
from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from joserfc.errors import JoseError

from screwops_console import oidc
from screwops_console.accounts import AccountFile
from screwops_console.routes.common import AppSettings, page
from screwops_console.session import check_form_token, log_in, logged_in

log = logging.getLogger("screwops.console")

router = APIRouter()

OIDC_NEXT = "oidc_next"
"""The session key of where to go after the issuer's sign-in."""


@router.get("/healthz")
async def healthz(settings: AppSettings) -> JSONResponse:
    """Liveness: the web app answers (the services' own health is on the overview)."""
    return JSONResponse({"status": "ok", "service": settings.service_name})


@router.get("/login", response_class=HTMLResponse, name="login")
async def login_page(
    request: Request, back_to: Annotated[str, Query(alias="next")] = "/"
) -> HTMLResponse:
    return _login_page(request, _local(back_to))


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
        return _login_page(request, _local(back_to), name=name.strip(), failed=True)
    log_in(request, account)
    return RedirectResponse(_local(back_to), status_code=303)


@router.get("/login/oidc", name="oidc_login", response_model=None)
async def oidc_login(
    request: Request, settings: AppSettings, back_to: Annotated[str, Query(alias="next")] = "/"
) -> Any:
    """Send the user to the issuer's sign-in; its state, nonce and PKCE verifier wait in the
    session for the callback."""
    issuer = _issuer(request)
    request.session[OIDC_NEXT] = _local(back_to)
    callback = settings.oidc_redirect_uri or str(request.url_for("oidc_callback"))
    try:
        return await issuer.authorize_redirect(request, callback)
    except (httpx2.HTTPError, ValueError) as exc:
        log.warning("OIDC issuer %s unreachable: %s", settings.oidc_issuer, exc)
        refused = f"{oidc.display_name(settings)} cannot be reached; try again later"
        return _login_page(request, _local(back_to), refused=refused, status_code=502)


@router.get("/login/oidc/callback", name="oidc_callback", response_model=None)
async def oidc_callback(request: Request, settings: AppSettings) -> RedirectResponse | HTMLResponse:
    """Where the issuer sends the user back with a code: authlib exchanges it and validates the
    id token; the user is logged in with the name and role its claims give, in a new session."""
    issuer = _issuer(request)
    back_to = _local(str(request.session.get(OIDC_NEXT, "/")))
    try:
        token = await issuer.authorize_access_token(
            request, claims_options=oidc.claims_options(settings)
        )
    except (OAuthError, JoseError, httpx2.HTTPError, ValueError) as exc:
        log.warning("OIDC sign-in refused: %s", exc)
        refused = f"{oidc.display_name(settings)} did not sign you in ({type(exc).__name__})"
        return _login_page(request, back_to, refused=refused, status_code=401)
    claims = token.get("userinfo")
    if not isinstance(claims, dict):
        refused = f"{oidc.display_name(settings)} sent no id token"
        return _login_page(request, back_to, refused=refused, status_code=401)
    found = oidc.account_of(claims, settings)
    accounts: AccountFile = request.app.state.accounts
    if isinstance(found, oidc.Refusal):
        return _login_page(request, back_to, refused=found.message, status_code=403)
    if accounts.get(found.name) is not None:
        refused = (
            f"{found.name} is the name of a local account here: log in with its password, or "
            "have an administrator remove it"
        )
        return _login_page(request, back_to, refused=refused, status_code=403)
    log_in(request, found, issued=True)
    return RedirectResponse(back_to, status_code=303)


@router.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    if logged_in(request) is not None:
        await check_form_token(request)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _issuer(request: Request) -> StarletteOAuth2App:
    found: StarletteOAuth2App | None = request.app.state.oidc
    if found is None:
        raise HTTPException(404, "no OIDC issuer is configured")
    return found


def _login_page(
    request: Request,
    back_to: str,
    *,
    name: str = "",
    failed: bool = False,
    refused: str = "",
    status_code: int | None = None,
) -> HTMLResponse:
    """The login page: the local form, and the issuer's "Sign in with" where one is configured,
    with why the last attempt failed."""
    settings = request.app.state.settings
    context = {
        "next": back_to,
        "name": name,
        "failed": failed,
        "refused": refused,
        "issuer": oidc.display_name(settings) if settings.oidc_configured else "",
    }
    code = status_code or (401 if failed else 200)
    return page(request, "login.html.j2", context, status_code=code)


def _local(target: str) -> str:
    """``target`` when it is a path of this console, else the overview: a login link cannot send
    the user on to another site."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target
