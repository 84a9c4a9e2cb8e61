"""Registry's settings (env prefix ``SCREWOPS_REGISTRY_``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict
from screwops_contracts.limits import MAX_ID_CHARS
from screwops_settings import ApiSettings, triton_model_repository
from screwops_settings.services import REGISTRY

DEFAULT_HISTORY_LIMIT = 100
"""Moves an alias's history keeps unless ``alias_history_limit`` says otherwise."""
DEFAULT_ALIAS_LIMIT = 16
"""Aliases an operator may name per model unless ``alias_limit`` says otherwise."""
EVERY_MODEL = "*"
"""The key of ``release_policy`` and ``rollout`` that applies to the models they do not name."""
MAX_STEPS = 20
"""Steps a canary may have: each is a decision the controller waits for."""


class ReleasePolicy(StrEnum):
    """What becomes of a version the evaluator approved."""

    AUTO = "auto"  # deployed as production at once
    MANUAL = "manual"  # named `candidate`, deployed only when an operator releases it


@dataclass(frozen=True)
class ReleasePolicies:
    """Each model's release policy: its own, else the ``*`` entry's, else ``auto``."""

    by_model: Mapping[str, ReleasePolicy] = field(default_factory=dict)

    def of(self, model_name: str) -> ReleasePolicy:
        return self.by_model.get(model_name, self.by_model.get(EVERY_MODEL, ReleasePolicy.AUTO))


class RolloutStrategy(StrEnum):
    """How a version goes to production."""

    IMMEDIATE = "immediate"  # production moves at once (model.deployed), no rollout
    CANARY = "canary"  # a growing share of the requests is answered by it, step by step
    SHADOW = "shadow"  # a share of the requests is also sent to it, its answers discarded


class RolloutPolicy(BaseModel):
    """One model's way to production: the strategy, and for a canary or shadow the shares and
    the minimums each step must reach before it may advance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: RolloutStrategy = RolloutStrategy.IMMEDIATE
    steps: tuple[float, ...] = Field(
        (5.0, 25.0, 100.0),
        min_length=1,
        max_length=MAX_STEPS,
        description="A canary's traffic share at each step, in percent, increasing; advancing "
        "past the last completes it (production moves to the candidate).",
    )
    shadow_share: float = Field(
        25.0,
        gt=0.0,
        le=100.0,
        description="Percent of the requests a shadow also sends to the candidate.",
    )
    min_inspections: int = Field(
        200, ge=0, description="Inspections the candidate answers at each step, at least."
    )
    min_step_seconds: float = Field(300.0, ge=0.0, description="Seconds each step lasts, at least.")
    lines: tuple[str, ...] = Field(
        (),
        description="The lines the rollout applies to; empty for every line (the others are "
        "served by production only).",
    )

    @model_validator(mode="after")
    def _shares(self) -> Self:
        if any(not 0.0 < s <= 100.0 for s in self.steps):
            raise ValueError("every step's share is above 0 and at most 100 percent")
        if list(self.steps) != sorted(set(self.steps)):
            raise ValueError("the steps' shares increase")
        if any(not line or len(line) > MAX_ID_CHARS for line in self.lines):
            raise ValueError(f"a line id is 1 to {MAX_ID_CHARS} characters")
        return self

    @property
    def shares(self) -> tuple[float, ...]:
        """The rollout's steps: the canary's, or a shadow's one share."""
        return (self.shadow_share,) if self.strategy is RolloutStrategy.SHADOW else self.steps


@dataclass(frozen=True)
class RolloutPolicies:
    """Each model's rollout policy: its own, else the ``*`` entry's, else immediate."""

    by_model: Mapping[str, RolloutPolicy] = field(default_factory=dict)

    def of(self, model_name: str) -> RolloutPolicy:
        return self.by_model.get(model_name, self.by_model.get(EVERY_MODEL, RolloutPolicy()))


@dataclass(frozen=True)
class Deployment:
    """Where versions are served, how many stay there, how long loading them may take, and how
    (and how often) they are checked."""

    repository: Path
    keep_versions: int = 3
    max_batch_size: int = 32
    queue_delay_us: int = 2000
    load_timeout_s: float = 300.0
    check_timeout_s: float = 30.0
    restore_interval_s: float = 5.0


class RegistrySettings(ApiSettings):
    """What an operator may tune in the registry."""

    model_config = SettingsConfigDict(
        env_prefix=REGISTRY.env_prefix, env_nested_delimiter="__", hide_input_in_errors=True
    )

    service_name: str = REGISTRY.name
    metrics_port: int = Field(REGISTRY.metrics_port, ge=1, le=65535)
    grpc_port: int = Field(REGISTRY.grpc_port, ge=1, le=65535)
    triton_repository: Path = Field(
        triton_model_repository(),
        description="Triton's model repository as this process sees it. The default is where "
        "the native stack starts tritonserver (screwops_settings.triton_model_repository under "
        "the default SCREWOPS_HOME); in docker-compose the registry and Triton mount the "
        "same volume (Triton at /models) and this names the registry's mount point.",
    )
    keep_versions: int = Field(
        3,
        ge=1,
        description="Newest versions kept in Triton's repository (and loaded), besides the "
        "production version and the one a rollback would return to; older ones are evicted "
        "and come back from object storage when promoted.",
    )
    max_batch_size: int = Field(32, ge=1, description="Largest batch Triton accepts per model.")
    queue_delay_us: int = Field(
        2000, ge=0, description="How long Triton waits to merge requests into one batch."
    )
    load_timeout_s: float = Field(
        300.0, gt=0, description="How long loading a version in Triton may take."
    )
    check_timeout_s: float = Field(
        30.0, gt=0, description="Deadline of the check inference a version must pass."
    )
    alias_history_limit: int = Field(
        DEFAULT_HISTORY_LIMIT,
        ge=2,
        description="Moves of an alias kept in its history (its MongoDB document): the newest "
        "ones. A rollback reaches back that many moves at most, and a promote or rollback "
        "retried with the same request id is recognised while its move is among them; an older "
        "retry counts as a new request (send --expect-version to have it refused instead).",
    )
    alias_limit: int = Field(
        DEFAULT_ALIAS_LIMIT,
        ge=0,
        description="Aliases an operator may name per model besides `production` and "
        "`candidate`; setting one more is refused until one is unset.",
    )
    release_policy: dict[str, ReleasePolicy] = Field(
        default_factory=dict,
        description="Release policy per model name, as JSON (e.g. "
        '\'{"screw-classifier": "manual"}\'; the key "*" applies to every model not named). '
        "auto (the default): an approved version is deployed as production at once. manual: "
        "it becomes `candidate` and waits until an operator releases it (screwops models "
        "release) or refuses it (screwops models refuse).",
    )
    rollout: dict[str, RolloutPolicy] = Field(
        default_factory=dict,
        description='Rollout policy per model name, as JSON (e.g. \'{"screw-classifier": '
        '{"strategy": "canary", "steps": [5, 25, 100], "min_inspections": 500, '
        '"min_step_seconds": 600, "lines": ["line-2"]}}\'; the key "*" applies to every model '
        "not named). How a version goes to production when it is approved (auto release "
        "policy), released (manual) or an operator starts it: immediate (the default) moves "
        "production at once; canary sends each step's share of the requests to it (advancing "
        "past the last step makes it production); shadow also sends shadow_share percent of "
        "them to it, its answers discarded. The first version of a model is deployed at once.",
    )
    restore_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often the registry asks Triton whether it still serves the production "
        "and rollback versions, and restores them when a restarted Triton came back empty.",
    )

    def rules(self) -> Deployment:
        """Where and how versions are placed and kept served, for the placement and the
        service to hold without the connections."""
        return Deployment(
            repository=self.triton_repository,
            keep_versions=self.keep_versions,
            max_batch_size=self.max_batch_size,
            queue_delay_us=self.queue_delay_us,
            load_timeout_s=self.load_timeout_s,
            check_timeout_s=self.check_timeout_s,
            restore_interval_s=self.restore_interval_s,
        )

    def release_policies(self) -> ReleasePolicies:
        return ReleasePolicies(dict(self.release_policy))

    def rollout_policies(self) -> RolloutPolicies:
        return RolloutPolicies(dict(self.rollout))
