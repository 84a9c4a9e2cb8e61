"""Console's settings (env prefix ``SCREWOPS_CONSOLE_``)."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from screwops_contracts.models import MODEL_NAME
from screwops_settings import (
    Role,
    ServiceSettings,
    console_admin_password_file,
    console_secrets_dir,
)
from screwops_settings.services import CONSOLE, GATEWAY, INGESTION, LABELING, REGISTRY


class ConsoleSettings(ServiceSettings):
    """What an operator may tune in the console.

    The services' addresses are settings of their own (services never import each other); their
    defaults are each service's default ``grpc_host:grpc_port`` on the native stack, and
    docker-compose names the services' hosts.
    """

    model_config = SettingsConfigDict(
        env_prefix=CONSOLE.env_prefix, env_nested_delimiter="__", hide_input_in_errors=True
    )

    service_name: str = CONSOLE.name
    metrics_port: int = Field(CONSOLE.metrics_port, ge=1, le=65535)
    http_host: str = Field(
        "127.0.0.1",
        description="Interface of the web app; 0.0.0.0 in containers. Every page needs a login; "
        "the console refuses to listen beyond loopback with no account to log in with.",
    )
    http_port: int = Field(CONSOLE.http_port, ge=1, le=65535, description="Port of the web app.")
    gateway_address: str = Field(
        f"127.0.0.1:{GATEWAY.grpc_port}", examples=[f"gateway:{GATEWAY.grpc_port}"]
    )
    ingestion_address: str = Field(
        f"127.0.0.1:{INGESTION.grpc_port}", examples=[f"ingestion:{INGESTION.grpc_port}"]
    )
    labeling_address: str = Field(
        f"127.0.0.1:{LABELING.grpc_port}", examples=[f"labeling:{LABELING.grpc_port}"]
    )
    registry_address: str = Field(
        f"127.0.0.1:{REGISTRY.grpc_port}", examples=[f"registry:{REGISTRY.grpc_port}"]
    )
    gateway_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token sent to the gateway, when it requires one: the console's "
        "principal's entry (role line) in SCREWOPS_GATEWAY_AUTH_TOKENS; empty sends none.",
    )
    ingestion_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token sent to ingestion, when it requires one: the console's "
        "principal's entry (role viewer) in SCREWOPS_INGESTION_AUTH_TOKENS; empty sends none.",
    )
    labeling_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token sent to labeling, when it requires one: the console's "
        "principal's entry (role labeler) in SCREWOPS_LABELING_AUTH_TOKENS; empty sends none.",
    )
    registry_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token sent to the registry, when it requires one: the console's "
        "principal's entry (role operator) in SCREWOPS_REGISTRY_AUTH_TOKENS; empty sends none.",
    )
    accounts_file: Path | None = Field(
        None,
        description="Local accounts, one 'name:role:argon2-hash' line each (python -m "
        "screwops_console add-user writes them); unset: <SCREWOPS_HOME>/secrets/console/accounts.",
    )
    first_admin: bool = Field(
        True,
        description="With no account yet, make 'admin' at start with a generated password, "
        "written to <SCREWOPS_HOME>/secrets/console/admin-password (owner-only, never logged).",
    )
    session_secret: SecretStr = Field(
        SecretStr(""),
        description="Signs the session cookie; empty: generated on first start into "
        "<SCREWOPS_HOME>/secrets/console/session-secret (owner-only) and read from there.",
    )
    session_max_age_s: int = Field(
        8 * 3600, ge=60, description="How long a login lasts without logging in again."
    )
    secure_cookies: bool | None = Field(
        None,
        description="Mark the session cookie Secure (sent over https only): set true when the "
        "console is served over https (behind a TLS proxy); unset: true in production.",
    )
    oidc_issuer: str = Field(
        "",
        description="Sign in through this OpenID Connect issuer too (its URL exactly as its "
        "discovery document names it, e.g. https://sso.example/realms/factory); empty: local "
        "accounts only. https, or http on a loopback host.",
    )
    oidc_client_id: str = Field("", description="The console's client id at the issuer.")
    oidc_client_secret: SecretStr = Field(
        SecretStr(""),
        description="The console's client secret at the issuer (a confidential "
        "client); empty for a public client, which PKCE still protects.",
    )
    oidc_scopes: list[str] = Field(
        ["openid", "profile", "email"],
        description="Scopes asked for; 'openid' is required, and some issuers (Dex) put the "
        "groups in the id token only when 'groups' is asked for.",
    )
    oidc_role_claim: str = Field(
        "groups",
        description="The id token's claim whose values map to a role: a string or a list of "
        "strings; a dotted path reaches into an object (Keycloak's realm_access.roles).",
    )
    oidc_roles: dict[str, Role] = Field(
        default_factory=dict,
        description="Role of each value of the role claim, as JSON, e.g. "
        '{"screwops-operators": "operator", "screwops-admins": "admin"}; a user with several '
        "gets the highest.",
    )
    oidc_default_role: Role | None = Field(
        None,
        description="Role of a user none of whose claim values is mapped; unset: such a user is "
        "refused, not made a viewer silently.",
    )
    oidc_name_claims: list[str] = Field(
        ["preferred_username", "sub"],
        description="Claims tried in turn for the user's name, which the services record as the "
        "actor; it must be a valid principal name and no local account's.",
    )
    oidc_display_name: str = Field(
        "", description="What the login page's 'Sign in with' names; empty: the issuer's host."
    )
    oidc_redirect_uri: str = Field(
        "",
        description="The callback registered at the issuer, <console URL>/login/oidc/callback; "
        "empty: derived from the request, which is wrong behind a proxy that changes the scheme "
        "or host.",
    )
    model_name: str = Field(MODEL_NAME, description="The registered model the pipeline page shows.")
    line_id: str = Field("console", description="Production line recorded with inspections.")
    camera_id: str = Field("upload", description="Camera recorded with inspections.")
    rpc_timeout_s: float = Field(10.0, gt=0, description="Deadline of each gRPC call.")
    promote_timeout_s: float = Field(
        360.0,
        gt=0,
        description="Deadline of Promote, which loads the version in Triton before answering.",
    )
    max_images: int = Field(32, ge=1, description="Most images one inspection upload may hold.")
    max_image_bytes: int = Field(
        8 * 1024 * 1024, ge=1, description="Largest image the inspection page sends on."
    )
    review_page_size: int = Field(
        12, ge=1, le=100, description="Review items shown at once (each with its image)."
    )
    runs_shown: int = Field(10, ge=1, le=200, description="Training runs on the pipeline page.")
    datasets_shown: int = Field(
        50, ge=1, le=500, description="Dataset versions on the pipeline page, newest first."
    )

    @model_validator(mode="after")
    def _usable_issuer(self) -> Self:
        """An issuer that could sign no one in, or over plain http beyond this host, is refused
        at start rather than at the first login."""
        if not self.oidc_issuer:
            return self
        parts = urlsplit(self.oidc_issuer)
        if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname)):
            raise ValueError("oidc_issuer must be an https URL (http only on a loopback host)")
        if not self.oidc_client_id:
            raise ValueError("oidc_issuer needs oidc_client_id")
        if "openid" not in self.oidc_scopes:
            raise ValueError("oidc_scopes must include 'openid'")
        if not self.oidc_roles and self.oidc_default_role is None:
            raise ValueError("oidc_issuer needs oidc_roles or oidc_default_role to give a role")
        return self

    @property
    def oidc_configured(self) -> bool:
        return bool(self.oidc_issuer)

    @property
    def secrets_dir(self) -> Path:
        return console_secrets_dir(self.stack.home)

    @property
    def admin_password_file(self) -> Path:
        return console_admin_password_file(self.stack.home)

    @property
    def accounts_path(self) -> Path:
        return self.accounts_file or self.secrets_dir / "accounts"

    @property
    def cookies_secure(self) -> bool:
        if self.secure_cookies is not None:
            return self.secure_cookies
        return self.stack.environment == "production"

    @property
    def on_loopback(self) -> bool:
        """Whether the web app listens on a loopback interface only (reachable from this host)."""
        return _loopback(self.http_host)


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ip_address(host).is_loopback
    except ValueError:
        return False
