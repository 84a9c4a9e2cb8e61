"""Labeling's settings (env prefix ``SCREWOPS_LABELING_``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from screwops_settings import ApiSettings
from screwops_settings.services import LABELING


@dataclass(frozen=True)
class ReviewPolicy:
    """Which inspections are queued for review, and where review outcomes become labels."""

    band: float
    sample_rate: float
    dataset_id: str
    retention: timedelta | None = None
    """How long an inspection stays in the queue, reviewed or not; None: for ever."""


@dataclass(frozen=True)
class Rules:
    """Everything the service takes from the settings, in one object so it never sees the rest."""

    reservation: timedelta
    review: ReviewPolicy


class LabelingSettings(ApiSettings):
    """What an operator may tune in labeling."""

    model_config = SettingsConfigDict(
        env_prefix=LABELING.env_prefix, env_nested_delimiter="__", hide_input_in_errors=True
    )

    service_name: str = LABELING.name
    metrics_port: int = Field(LABELING.metrics_port, ge=1, le=65535)
    grpc_port: int = Field(LABELING.grpc_port, ge=1, le=65535)
    reservation_seconds: float = Field(
        600.0,
        gt=0,
        description="How long NextUnlabeled keeps an image for one annotator before it may be "
        "handed to another.",
    )
    review_band: float = Field(
        0.15,
        gt=0,
        le=1,
        description="An inspection whose defect probability lies closer than this to its "
        "threshold is queued for review as low confidence.",
    )
    review_sample_rate: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of the other inspections (with a stored image) queued as a random "
        "sample, so accuracy is also measured where the model is confident.",
    )
    review_dataset_id: str = Field(
        "screws",
        description="Dataset whose labels a review outcome joins, so a reviewed image that is "
        "ingested into it later arrives labeled.",
    )

    review_retention_days: int = Field(
        30,
        ge=0,
        description="Days an inspection stays in the review queue, reviewed or not, counted "
        "from the inspection; older ones are deleted hourly (0: kept for ever). Keep it at most "
        "the gateway's inspection_retention_days: an item whose image expired cannot be "
        "reviewed or handed to retraining.",
    )

    def rules(self) -> Rules:
        """Built beside the fields, so a new setting reaches the service in one place."""
        return Rules(
            reservation=timedelta(seconds=self.reservation_seconds),
            review=ReviewPolicy(
                band=self.review_band,
                sample_rate=self.review_sample_rate,
                dataset_id=self.review_dataset_id,
                retention=(
                    timedelta(days=self.review_retention_days)
                    if self.review_retention_days
                    else None
                ),
            ),
        )
