"""The one source of ScrewOps' endpoints, ports and credentials.

The native stack (``make up``) binds its servers to the ports named here, docker-compose publishes
the same ports, and every service reads its connections from here, so a port changes in one place.
Values come from ``SCREWOPS_*`` environment variables (nested with ``__``, for example
``SCREWOPS_KAFKA__BOOTSTRAP_SERVERS=kafka:9092``) over the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "KafkaSettings",
    "MinioSettings",
    "MongoSettings",
    "StackSettings",
    "TelemetrySettings",
    "TritonSettings",
    "port_of",
]


def port_of(address: str) -> int:
    """Port of ``host:port`` or a URL, so settings can hold addresses the way clients want them."""
    parsed = urlsplit(address if "://" in address else f"//{address}")
    if parsed.port is None:
        raise ValueError(f"address {address!r} names no port")
    return parsed.port


class KafkaSettings(BaseModel):
    """Where the Kafka broker listens and how new topics are laid out."""

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Broker address for clients.", examples=["kafka:9092"]
    )
    controller_port: int = Field(9093, description="KRaft controller listener (native stack).")
    partitions: int = Field(
        3,
        description="Partitions per topic: enough for two instances of a consumer group to share.",
    )


class MinioSettings(BaseModel):
    """The S3 endpoint for artifacts, and its root credentials."""

    endpoint: str = Field("127.0.0.1:9000", examples=["minio:9000"])
    console_port: int = 9001
    access_key: str = "screwops"
    secret_key: SecretStr = SecretStr("screwops-dev-secret")
    secure: bool = False


class MongoSettings(BaseModel):
    """The MongoDB-wire server for metadata (FerretDB natively, MongoDB in docker-compose)."""

    uri: SecretStr = Field(
        SecretStr("mongodb://127.0.0.1:27017/"), examples=["mongodb://mongo:27017/"]
    )
    database: str = "screwops"


class TritonSettings(BaseModel):
    """Triton Inference Server's three endpoints."""

    http_url: str = Field("127.0.0.1:8000", examples=["triton:8000"])
    grpc_url: str = Field("127.0.0.1:8001", examples=["triton:8001"])
    metrics_url: str = Field("127.0.0.1:8002", examples=["triton:8002"])


class TelemetrySettings(BaseModel):
    """Where traces go (OTLP into Jaeger), where they are read back, and Prometheus."""

    otlp_grpc_endpoint: str = Field("http://127.0.0.1:4317", examples=["http://jaeger:4317"])
    otlp_http_endpoint: str = Field("http://127.0.0.1:4318", examples=["http://jaeger:4318"])
    jaeger_query_url: str = Field("http://127.0.0.1:16686", examples=["http://jaeger:16686"])
    prometheus_url: str = Field("http://127.0.0.1:9090", examples=["http://prometheus:9090"])


class StackSettings(BaseSettings):
    """Connections to every server of the stack, shared by the stack manager and the services."""

    model_config = SettingsConfigDict(
        env_prefix="SCREWOPS_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["development", "production"] = "development"
    home: Path = Field(
        Path.home() / ".cache" / "screwops",
        description="Native stack only: installed servers, their data, logs and pid files.",
    )
    kafka: KafkaSettings = KafkaSettings()
    minio: MinioSettings = MinioSettings()
    mongo: MongoSettings = MongoSettings()
    triton: TritonSettings = TritonSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
