"""Console's settings (env prefix ``SCREWOPS_CONSOLE_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from screwops_contracts.models import MODEL_NAME
from screwops_settings import ServiceSettings
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
        description="Interface of the web app; 0.0.0.0 in containers. The console has no login "
        "of its own (it can promote and roll back models): keep it on loopback or behind an "
        "authenticating proxy.",
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
