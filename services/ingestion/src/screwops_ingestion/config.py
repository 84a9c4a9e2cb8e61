"""Ingestion's settings (env prefix ``SCREWOPS_INGESTION_``)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from screwops_imaging import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from screwops_settings import ApiSettings
from screwops_settings.services import INGESTION


@dataclass(frozen=True)
class Limits:
    """Per-file limits and how many files are checked and stored at once."""

    max_bytes: int
    max_pixels: int
    concurrency: int
    max_csv_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class Rules:
    """Everything the service takes from the settings, in one object so it never sees the rest."""

    limits: Limits
    import_roots: tuple[str, ...]
    claim_timeout_s: float = 120.0
    """How long another ingest waits on a version number claimed but not completed before it
    abandons the claim (its claimant is taken to have crashed) and skips the number."""


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
        default_factory=list,
        description="Server-side directories an Import request may read from (a JSON list). "
        "Empty, the default: nothing is importable until an operator names them.",
    )
    max_csv_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1,
        description="A CSV layout's index file larger than this refuses the import: it is read "
        "whole before any image.",
    )

    version_claim_timeout_s: float = Field(
        120.0,
        gt=0,
        description=(
            "A version number claimed this long ago and never completed (its ingest crashed) is "
            "abandoned and skipped; until then the dataset's next version waits for it."
        ),
    )

    def rules(self) -> Rules:
        """Built beside the fields, so a new setting reaches the service in one place."""
        return Rules(
            limits=Limits(
                max_bytes=self.max_image_bytes,
                max_pixels=self.max_image_pixels,
                concurrency=self.upload_concurrency,
                max_csv_bytes=self.max_csv_bytes,
            ),
            import_roots=tuple(self.import_roots),
            claim_timeout_s=self.version_claim_timeout_s,
        )
