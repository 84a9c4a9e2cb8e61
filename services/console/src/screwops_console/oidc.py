"""Sign-in through an OpenID Connect issuer (Keycloak, Dex, ...), the option beside local accounts.

authlib's Starlette client does the protocol: it reads the issuer's discovery document, sends the
user to the authorize endpoint with a state, a nonce and a PKCE challenge (kept in the session),
exchanges the code at the token endpoint, and validates the id token (its signature against the
issuer's JWKS, issuer, nonce and expiry, and the audience as :func:`claims_options` asks). What
is the console's own is who the token
names and what they may do: the name is the first of the configured claims that is set, and the
role is the highest one mapped from the role claim's values (or the configured default); a user
with no role is refused rather than let in as a viewer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App
from screwops_settings import PRINCIPAL_PATTERN, Role

from screwops_console.accounts import Account
from screwops_console.config import ConsoleSettings

CLIENT_NAME = "issuer"


@dataclass(frozen=True)
class Refusal:
    """Why a user the issuer vouched for may not use the console, as the login page says it."""

    message: str


def client(settings: ConsoleSettings) -> StarletteOAuth2App | None:
    """The issuer's client, or None when no issuer is configured. Nothing is fetched until the
    first sign-in (the discovery document, then the JWKS), so the console starts while the issuer
    is down."""
    if not settings.oidc_configured:
        return None
    oauth = OAuth()
    oauth.register(
        CLIENT_NAME,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret.get_secret_value() or None,
        server_metadata_url=f"{settings.oidc_issuer.rstrip('/')}/.well-known/openid-configuration",
        code_challenge_method="S256",
        client_kwargs={
            "scope": " ".join(settings.oidc_scopes),
            "timeout": settings.rpc_timeout_s,
            **(
                {}
                if settings.oidc_client_secret.get_secret_value()
                else {"token_endpoint_auth_method": "none"}
            ),
        },
    )
    found: StarletteOAuth2App = oauth.create_client(CLIENT_NAME)
    return found


def claims_options(settings: ConsoleSettings) -> dict[str, Any]:
    """What the id token must say beyond a valid signature, nonce and lifetime: issued by the
    configured issuer, to this client. authlib checks the issuer by default but not the audience
    (only ``azp``, so a token for another client that names this one as ``azp`` would pass)."""
    return {
        "iss": {"essential": True, "value": settings.oidc_issuer},
        "aud": {"essential": True, "value": settings.oidc_client_id},
    }


def display_name(settings: ConsoleSettings) -> str:
    """What the login page's "Sign in with" names."""
    return settings.oidc_display_name or urlsplit(settings.oidc_issuer).hostname or "the issuer"


def account_of(claims: dict[str, Any], settings: ConsoleSettings) -> Account | Refusal:
    """The console account the id token's ``claims`` give, or why they give none."""
    name = next(
        (value for claim in settings.oidc_name_claims if (value := claims.get(claim))), None
    )
    if not isinstance(name, str) or not re.fullmatch(PRINCIPAL_PATTERN, name):
        tried = ", ".join(settings.oidc_name_claims)
        return Refusal(
            f"the issuer named no usable user ({tried}: letters, digits, '.', '_', '@', '-')"
        )
    values = _values(claims, settings.oidc_role_claim)
    mapped = [settings.oidc_roles[value] for value in values if value in settings.oidc_roles]
    if mapped:
        return Account(name, max(mapped, key=list(Role).index))
    if settings.oidc_default_role is not None:
        return Account(name, settings.oidc_default_role)
    return Refusal(
        f"{name} has no role in the console: none of their {settings.oidc_role_claim} "
        f"({', '.join(values) or 'none'}) is mapped to one; an administrator maps it with "
        "SCREWOPS_CONSOLE_OIDC_ROLES"
    )


def _values(claims: dict[str, Any], path: str) -> list[str]:
    """The string values at a dotted ``path`` of ``claims`` (a string or a list of them)."""
    found: Any = claims
    for key in path.split("."):
        found = found.get(key) if isinstance(found, dict) else None
    if isinstance(found, str):
        return [found]
    if isinstance(found, list):
        return [value for value in found if isinstance(value, str)]
    return []
