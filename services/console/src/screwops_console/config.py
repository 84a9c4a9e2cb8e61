"""Console's settings (env prefix ``SCREWOPS_CONSOLE_``)."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from screwops_contracts.models import MODEL_NAME
from screwops_settings import ServiceSettings, console_admin_password_file, console_secrets_dir
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
        if self.http_host == "localhost":
            return True
        try:
            return ip_address(self.http_host).is_loopback
        except ValueError:
            return False
