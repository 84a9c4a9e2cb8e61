"""Trainer's settings (env prefix ``SCREWOPS_TRAINER_``).

The hyper-parameters are one nested setting, so an operator (or a test that must train in
seconds) overrides any of them alone: ``SCREWOPS_TRAINER_PARAMS__EPOCHS=3``,
``SCREWOPS_TRAINER_PARAMS__FILTERS=[8,16]``. Importing this module does not import TensorFlow,
so reading the settings stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from screwops_contracts.models import MODEL_NAME, ModelKind
from screwops_settings import ClaimSettings, ServiceSettings
from screwops_settings.services import TRAINER
from screwops_storage import ClaimTimes, SweepTimes

from screwops_trainer.dataset import MAX_FRAME_SIZE
from screwops_trainer.params import TrainingParams, for_kind
from screwops_trainer.threshold import ThresholdRules


@dataclass(frozen=True)
class Rules:
    """What every run is trained and judged by, and how long it may take, in one object so the
    service never sees the connection settings or TensorFlow's threads."""

    model_name: str
    params: TrainingParams
    model_kind: ModelKind = ModelKind.SUPERVISED
    threshold_rules: ThresholdRules = field(default_factory=ThresholdRules)
    concurrency: int = 8
    claims: ClaimTimes = field(default_factory=lambda: ClaimTimes(max_run_s=3600.0))
    """How long one run may take and how often it renews its claim: a run's claim older than
    that, or not renewed for three heartbeats, was abandoned, and the next delivery takes it
    over with a new attempt (see :mod:`screwops_storage.claims`)."""
    sweep: SweepTimes = field(default_factory=SweepTimes)
    """How often, and past what age, the artifacts of attempts that lost are deleted."""
    frame_size: int = 0


class TrainerSettings(ClaimSettings, ServiceSettings):
    """What an operator may tune in the trainer: the params, TensorFlow's threads, the basics."""

    model_config = SettingsConfigDict(
        env_prefix=TRAINER.env_prefix,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    service_name: str = TRAINER.name
    metrics_port: int = Field(TRAINER.metrics_port, ge=1, le=65535)
    model_name: str = Field(
        MODEL_NAME, description="The model this trainer trains; training.requested names it."
    )
    params: TrainingParams = Field(
        default_factory=TrainingParams, description="Hyper-parameters of every run."
    )
    model_kind: ModelKind = Field(
        ModelKind.SUPERVISED,
        description="The kind of model this trainer trains; it decides how the threshold is "
        "chosen on the validation split and travels with the model to the gateway.",
    )
    threshold: ThresholdRules = Field(
        default_factory=ThresholdRules,
        description="How each run's decision threshold is chosen on its validation split.",
    )
    max_run_s: float = Field(
        3600.0,
        gt=0,
        description="The longest a training run may take; Kafka keeps the trainer in its "
        "consumer group that long without a poll, and a run's claim older than that is taken "
        "over by a redelivery with a new attempt, whose model alone can be recorded.",
    )
    intra_op_threads: int = Field(
        2, ge=1, description="TensorFlow's threads inside one op; the machine is shared."
    )
    inter_op_threads: int = Field(1, ge=1, description="TensorFlow's ops run at once.")
    frame_size: int = Field(
        0,
        ge=0,
        le=MAX_FRAME_SIZE,
        description="The side of the frames the model takes; 0: the training images' most "
        "common side (at most 1024). Pin it when a model name must keep serving one camera's "
        "size: Triton serves every version of a name at one frame size.",
    )
    image_concurrency: int = Field(
        8, ge=1, description="Images fetched and decoded at once while loading a version."
    )
    git_sha: str | None = Field(
        None,
        description="Commit the trainer was built from, recorded with each run; unset: asked "
        "of git at start, 'unknown' where there is no checkout (a container).",
    )

    def rules(self) -> Rules:
        """Built beside the fields, so a new setting reaches the service in one place."""
        return Rules(
            model_name=self.model_name,
            params=for_kind(self.params, self.model_kind.value),
            model_kind=self.model_kind,
            threshold_rules=self.threshold,
            concurrency=self.image_concurrency,
            claims=ClaimTimes(max_run_s=self.max_run_s, heartbeat_s=self.claim_heartbeat_s),
            sweep=SweepTimes(
                interval_s=self.attempt_sweep_interval_s, min_age_s=self.attempt_sweep_min_age_s
            ),
            frame_size=self.frame_size,
        )
