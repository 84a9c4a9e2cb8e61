"""Who is logged in: the signed session cookie, the form token on every POST, and role checks.

The session (Starlette's ``SessionMiddleware``: a cookie signed with the session secret, HttpOnly,
SameSite=Strict, Secure where configured) holds the account's name and a random form token, and for
a user the OIDC issuer signed in, their role (they have no line in the accounts file; the cookie's
signature keeps the role theirs). With an issuer configured the cookie is SameSite=Lax: the
issuer's redirect back to the callback is a navigation from another site, which a strict cookie
would not come along with, and the callback needs the session's state and nonce. Every
route but the login page, static files and ``/healthz`` depends on :func:`signed_in`: a page asked
for without a session redirects to the login, a POST without one is refused (403) before the route
runs, and so is a POST whose ``csrf_token`` field is not the session's (on top of the Origin check
of ``web.SecurityHeaders``). The account is looked up again on every request, so one removed from
the accounts file, or given a lesser role, loses its rights on its next request; an issuer's user
keeps the role of their sign-in until the session ends (``session_max_age_s``), or until the issuer
is no longer configured.
"""

from __future__ import annotations

import hmac
import os
import secrets
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, HTTPException, Request
from screwops_rpc import on_behalf_of
from screwops_settings import Role

from screwops_console.accounts import Account, AccountFile
from screwops_console.config import ConsoleSettings

SESSION_COOKIE = "screwops_console_session"
CSRF_FIELD = "csrf_token"
ISSUED_ROLE = "oidc_role"
"""The session key of the role an OIDC sign-in gave; absent for a local account."""
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class NotLoggedInError(Exception):
    """A page was asked for without a session: ``web`` answers with the login page's address."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.location = f"/login?{urlencode({'next': back_to})}"


def session_secret(settings: ConsoleSettings) -> str:
    """The secret that signs session cookies: the setting, else the one generated on first start
    into an owner-only file, so logins outlive a restart."""
    given = settings.session_secret.get_secret_value()
    if given:
        return given
    path = settings.secrets_dir / "session-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as out:
        generated = secrets.token_urlsafe(32)
        out.write(generated + "\n")
    return generated


def form_token(request: Request) -> str:
    """This session's form token, made on first use (the login page's form carries one too)."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


def log_in(request: Request, account: Account, *, issued: bool = False) -> None:
    """Start a new session for ``account`` (one the OIDC issuer vouched for when ``issued``):
    nothing of the session before survives (its form token included), so a session planted
    before the login is worth nothing after it."""
    request.session.clear()
    request.session["user"] = account.name
    if issued:
        request.session[ISSUED_ROLE] = account.role.value
    form_token(request)


def logged_in(request: Request) -> Account | None:
    """The account of this request's session: a local one as the accounts file says now, an
    issuer's as its sign-in gave it while the issuer is configured."""
    name = request.session.get("user")
    if not isinstance(name, str):
        return None
    issued = request.session.get(ISSUED_ROLE)
    if issued is not None:
        settings: ConsoleSettings = request.app.state.settings
        if not settings.oidc_configured or not isinstance(issued, str):
            return None
        try:
            return Account(name, Role(issued))
        except ValueError:
            return None
    accounts: AccountFile = request.app.state.accounts
    return accounts.get(name)


async def check_form_token(request: Request) -> None:
    """Refuse (403) a POST whose form does not carry this session's token."""
    expected = request.session.get(CSRF_FIELD)
    given = (await request.form()).get(CSRF_FIELD)
    if not (
        isinstance(expected, str)
        and expected
        and isinstance(given, str)
        and hmac.compare_digest(given.encode(), expected.encode())
    ):
        raise HTTPException(403, "this form is stale or was not sent from the console: reload it")


async def signed_in(request: Request) -> Account:
    """The logged-in account; a page without one goes to the login, a POST without one or
    without the session's form token is refused (403)."""
    account = logged_in(request)
    if request.method in SAFE_METHODS:
        if account is None:
            query = f"?{request.url.query}" if request.url.query else ""
            raise NotLoggedInError(f"{request.url.path}{query}")
        return account
    if account is None:
        raise HTTPException(403, "log in first")
    await check_form_token(request)
    return account


def needs(role: Role) -> Any:
    """A dependency: the logged-in account, refused (403) unless its role allows ``role``."""

    async def allowed(account: Annotated[Account, Depends(signed_in)]) -> Account:
        if not account.role.allows(role):
            raise HTTPException(
                403, f"this needs the {role} role; {account.name} is {account.role}"
            )
        return account

    return Depends(allowed)


def acting_for(account: Account) -> tuple[tuple[str, str], ...]:
    """The metadata of a call the console makes for ``account``: the API serves it as the user
    (``<user> (via console)``, with the lesser of both roles) where the console's token may
    delegate, and refuses it where it may not."""
    return on_behalf_of(account.name, account.role)


SignedIn = Annotated[Account, Depends(signed_in)]
Operator = Annotated[Account, needs(Role.OPERATOR)]
Labeler = Annotated[Account, needs(Role.LABELER)]
Line = Annotated[Account, needs(Role.LINE)]
