"""Ingestion's settings (env prefix ``SCREWOPS_INGESTION_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from screwops_imaging import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from screwops_settings import ApiSettings
from screwops_settings.services import INGESTION


class IngestionSettings(ApiSettings):
    """What an operator may tune in ingestion."""

    model_config = SettingsConfigDict(
        env_prefix=INGESTION.env_prefix, env_nested_delimiter="__", hide_input_in_errors=True
    )

    service_name: str = INGESTION.name
    metrics_port: int = Field(INGESTION.metrics_port, ge=1, le=65535)
    grpc_port: int = Field(INGESTION.grpc_port, ge=1, le=65535)
    max_image_bytes: int = Field(DEFAULT_MAX_BYTES, description="Larger files are refused.")
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, description="Larger images are refused.")
    upload_concurrency: int = Field(
        8, ge=1, description="Images checked and stored at once per upload or import."
    )
    import_roots: list[str] = Field(
        default_factory=lambda: ["/"],
        description="Server-side directories an Import request may read from.",
    )
