"""Validation's settings (env prefix ``SCREWOPS_VALIDATION_``): the data assertions' thresholds
and the split are operator choices, so every one of them is a setting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict
from screwops_contracts.datasets import DEFECT_TYPES, Label
from screwops_contracts.models import ModelKind
from screwops_settings import ClaimSettings, ServiceSettings
from screwops_settings.services import VALIDATION
from screwops_storage import ClaimTimes, SweepTimes


class Thresholds(BaseModel):
    """What a dataset version must satisfy, and how it is split.

    Kept apart from the service's connection settings so the domain logic (and its tests) take
    exactly these, and so the report can record the rules a version was judged by.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_labels: tuple[Label, ...] = Field(
        (Label.GOOD, Label.BAD), min_length=1, description="Labels a version may use."
    )
    allowed_defect_types: tuple[str, ...] = Field(
        DEFECT_TYPES, description="Defect types a 'bad' label may name."
    )
    model_kind: ModelKind = Field(
        ModelKind.SUPERVISED,
        description="What the data feeds: a supervised model needs defective images in every "
        "split; a good-only model needs none to train, only enough good ones to set its "
        "threshold, and never trains on a defect.",
    )
    min_per_class: int = Field(
        20,
        ge=1,
        description="Fewest usable images per allowed label (good-only: of the good label; "
        "defects are optional).",
    )
    min_defective_per_split: int = Field(
        3,
        ge=1,
        description="Supervised: fewest defective images in each of train, validation and test. "
        "Below 3 the validation split cannot choose a threshold (one missed defect swings its "
        "recall by half or more) and the test split's recall is a coin toss. A line's real set "
        "of 119 defects gives about 83/18/18; a handful (5) gives 1 to validation and to test.",
    )
    min_good_for_threshold: int = Field(
        50,
        ge=1,
        description="Good-only: fewest good images in the validation split, where the threshold "
        "is set for 1 % false rejects. One rejected image is already 2 % of 50; with fewer, a "
        "single image is several times the target, so the rate can be neither set nor checked.",
    )
    expected_size: tuple[int, int] | None = Field(
        None, description="Width and height every image must have; None: whatever most have."
    )
    expected_mode: str | None = Field(
        None, description="PIL mode every image must have (e.g. 'L'); None: whatever most have."
    )
    resize_to: int | None = Field(
        None,
        ge=1,
        description="Declared square resize before training: images may then differ in size.",
    )
    max_exact_duplicates: int = Field(
        0, ge=0, description="Redundant copies of pixel-identical images allowed in a version."
    )
    near_duplicate_distance: int = Field(
        4, ge=0, le=64, description="Largest Hamming distance of two 64-bit pHashes that are near."
    )
    max_cross_split_near_duplicates: int = Field(
        0, ge=0, description="Near-duplicate pairs allowed across splits (leakage)."
    )
    train_fraction: float = Field(0.7, gt=0.0, lt=1.0)
    validation_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    split_seed: int = Field(
        0, ge=0, description="Salt of the content hashes that order the new images of a split."
    )
    drift_max_ks: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="Largest Kolmogorov-Smirnov statistic between two splits' brightness or "
        "contrast distributions.",
    )
    drift_alpha: float = Field(
        0.001,
        gt=0.0,
        lt=1.0,
        description="Significance level: small splits fail only when their drift is also "
        "larger than the KS critical value at this level, so sampling noise never rejects.",
    )
    max_reported_pairs: int = Field(
        200, ge=0, description="Near-duplicate pairs listed in the report (all are counted)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        total = self.train_fraction + self.validation_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, not {total:g}")
        if self.resize_to is not None and self.expected_size is not None:
            raise ValueError("declare either expected_size or resize_to, not both")
        return self

    @property
    def fractions(self) -> tuple[float, float, float]:
        """Train, validation and test fractions, in the order of ``SplitName``."""
        return (self.train_fraction, self.validation_fraction, self.test_fraction)


@dataclass(frozen=True)
class Rules:
    """What every version is judged by, and how many of its images are measured at once, in one
    object so the service never sees the connection settings; the report records
    ``thresholds``."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    concurrency: int = 8
    claims: ClaimTimes = field(default_factory=lambda: ClaimTimes(max_run_s=900.0))
    """How long one validation may take and how often it renews its claim: a claim older than
    that, or not renewed for three heartbeats, was abandoned, and the next delivery takes it
    over with a new attempt (see :mod:`screwops_storage.claims`)."""
    sweep: SweepTimes = field(default_factory=SweepTimes)
    """How often, and past what age, the objects of attempts that lost are deleted."""


class ValidationSettings(Thresholds, ClaimSettings, ServiceSettings):
    """What an operator may tune in validation: the thresholds, concurrency and the basics."""

    model_config = SettingsConfigDict(
        env_prefix=VALIDATION.env_prefix,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    service_name: str = VALIDATION.name
    metrics_port: int = Field(VALIDATION.metrics_port, ge=1, le=65535)
    concurrency: int = Field(
        8, ge=1, description="Images fetched and measured at once; bounds memory as well."
    )
    max_run_s: float = Field(
        900.0,
        gt=0,
        description="How long one validation may take; a claim older than that is taken as "
        "abandoned and a redelivery takes it over with a new attempt, whose result alone can "
        "be recorded.",
    )

    def rules(self) -> Rules:
        """Built beside the fields, so a new setting reaches the service in one place; the
        thresholds are a plain :class:`Thresholds` (a settings object is one too), so the report
        records only them."""
        return Rules(
            thresholds=Thresholds.model_validate(
                {name: getattr(self, name) for name in Thresholds.model_fields}
            ),
            concurrency=self.concurrency,
            claims=ClaimTimes(max_run_s=self.max_run_s, heartbeat_s=self.claim_heartbeat_s),
            sweep=SweepTimes(
                interval_s=self.attempt_sweep_interval_s, min_age_s=self.attempt_sweep_min_age_s
            ),
        )
