"""Evaluator's settings (env prefix ``SCREWOPS_EVALUATOR_``): the gate's thresholds are operator
choices, so every one of them is a setting, and so are the Triton names a test must keep apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict
from screwops_contracts.models import STAGING_MODEL_NAME
from screwops_settings import ClaimSettings, ServiceSettings, triton_model_repository
from screwops_settings.services import EVALUATOR
from screwops_storage import ClaimTimes, SweepTimes


class Gate(BaseModel):
    """What a candidate must score on its version's test split to be approved.

    Kept apart from the connection settings so the gate (and its tests) take exactly these, and
    so the evaluation report can record the rules a candidate was judged by. There is no
    threshold here: each candidate is judged at the one its run chose on validation data (and
    production at its own), the threshold the gateway will apply, so the gate measures what the
    line will see.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_accuracy: float = Field(
        0.95, ge=0.0, lt=1.0, description="Test accuracy a candidate must exceed (strictly)."
    )
    min_defect_recall: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Share of the test split's defective screws a candidate must catch.",
    )
    min_roc_auc: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Image ROC AUC a candidate must reach: how well its scores rank defective "
        "screws above good ones, whatever the threshold.",
    )
    min_type_recall: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Recall every defect type with at least min_type_images test images must "
        "reach; unset: min_defect_recall, so no type may hide behind the others.",
    )
    min_type_images: int = Field(
        5, ge=1, description="Test images a defect type needs before its own recall is gated."
    )
    max_accuracy_drop: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="How far below production's accuracy on the same test split a candidate's "
        "accuracy may be.",
    )
    max_recall_drop: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="How far below production's defect recall on the same test split a "
        "candidate's may be; unset: max_accuracy_drop.",
    )
    min_test_images: int = Field(5, ge=1, description="Fewest test images a verdict may rest on.")

    @property
    def type_recall_floor(self) -> float:
        """The recall each well-represented defect type must reach."""
        return self.min_defect_recall if self.min_type_recall is None else self.min_type_recall

    @property
    def recall_drop_allowed(self) -> float:
        """How far below production's recall a candidate's may be."""
        return self.max_accuracy_drop if self.max_recall_drop is None else self.max_recall_drop


@dataclass(frozen=True)
class Staging:
    """Where candidates are staged and how they are loaded, checked and scored."""

    repository: Path
    model: str
    max_batch_size: int = 32
    load_timeout_s: float = 300.0
    check_timeout_s: float = 30.0
    infer_timeout_s: float = 60.0


@dataclass(frozen=True)
class Rules:
    """What every evaluation is staged and judged by, in one object so the service never sees
    the connection settings; the staging area takes ``staging``, the report records ``gate``."""

    staging: Staging
    gate: Gate = field(default_factory=Gate)
    concurrency: int = 8
    claims: ClaimTimes = field(default_factory=lambda: ClaimTimes(max_run_s=1800.0))
    """How long one evaluation may take and how often it renews its claim: a claim older than
    that, or not renewed for three heartbeats, was abandoned, and the next delivery takes it
    over with a new attempt (see :mod:`screwops_storage.claims`)."""
    sweep: SweepTimes = field(default_factory=SweepTimes)
    """How often, and past what age, the reports of attempts that lost are deleted."""


class EvaluatorSettings(Gate, ClaimSettings, ServiceSettings):
    """What an operator may tune in the evaluator: the gate, Triton and the basics."""

    model_config = SettingsConfigDict(
        env_prefix=EVALUATOR.env_prefix,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    service_name: str = EVALUATOR.name
    metrics_port: int = Field(EVALUATOR.metrics_port, ge=1, le=65535)
    triton_repository: Path = Field(
        triton_model_repository(),
        description="Triton's model repository as this process sees it. The default is where "
        "the native stack starts tritonserver (screwops_settings.triton_model_repository under "
        "the default SCREWOPS_HOME); in docker-compose the evaluator and Triton mount the "
        "same volume (Triton at /models) and this names the evaluator's mount point.",
    )
    staging_model: str = Field(
        STAGING_MODEL_NAME,
        description="Triton model name candidates are loaded under for infra validation; "
        "never the name production is served under.",
    )
    max_batch_size: int = Field(
        32, ge=1, description="Largest batch sent to Triton (and the staging config's limit)."
    )
    load_timeout_s: float = Field(
        300.0, gt=0, description="How long loading a candidate in Triton may take."
    )
    check_timeout_s: float = Field(
        30.0, gt=0, description="Deadline of the warm-up inference a candidate must pass."
    )
    infer_timeout_s: float = Field(60.0, gt=0, description="Deadline of one scoring batch.")
    concurrency: int = Field(
        8, ge=1, description="Test images fetched and decoded at once; bounds memory as well."
    )
    max_run_s: float = Field(
        1800.0,
        gt=0,
        description="How long one evaluation may take (loads, checks and scoring included); a "
        "claim older than that is taken as abandoned and a redelivery takes it over with a new "
        "attempt, whose result alone can be recorded.",
    )

    def rules(self) -> Rules:
        """Built beside the fields, so a new setting reaches the service in one place; the gate
        is a plain :class:`Gate` (a settings object is one too), so the report records only it."""
        return Rules(
            staging=Staging(
                repository=self.triton_repository,
                model=self.staging_model,
                max_batch_size=self.max_batch_size,
                load_timeout_s=self.load_timeout_s,
                check_timeout_s=self.check_timeout_s,
                infer_timeout_s=self.infer_timeout_s,
            ),
            gate=Gate.model_validate({name: getattr(self, name) for name in Gate.model_fields}),
            concurrency=self.concurrency,
            claims=ClaimTimes(max_run_s=self.max_run_s, heartbeat_s=self.claim_heartbeat_s),
            sweep=SweepTimes(
                interval_s=self.attempt_sweep_interval_s, min_age_s=self.attempt_sweep_min_age_s
            ),
        )
