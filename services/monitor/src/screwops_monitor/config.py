"""Monitor's settings (env prefix ``SCREWOPS_MONITOR_``): how much of a version's first stream is
its reference, how much of the stream a signal looks at, where each signal alarms and re-arms, how
often retraining may be asked for, and what the rollout controller tolerates of a canary are
operator choices, so every one of them is a setting."""

from __future__ import annotations

import itertools
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from screwops_settings import ServiceSettings
from screwops_settings.services import MONITOR, REGISTRY

# Probability bins of the score-drift signal. A classifier's scores pile up near 0 and 1, so the
# bins are fine at the ends and coarse in the middle: mass moving from "sure" to "unsure" is what
# a change of lighting or of parts does first.
DEFAULT_DRIFT_BINS = (0.0, 0.05, 0.2, 0.5, 0.8, 0.95, 1.0)


class Rules(BaseModel):
    """The signals' windows, thresholds and the retraining cooldown.

    Kept apart from the connection settings so the signal math (and its tests) take exactly
    these. Each alarm has a lower re-arm level (hysteresis): a signal that crossed its threshold
    fires once and fires again only after it has come back past the re-arm level, so a value
    hovering at the threshold cannot fire on every inspection.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference_size: int = Field(
        200,
        ge=1,
        description="First inspections of a production version that make its reference: the "
        "score distribution and defect rate of the line as this version found it, which the "
        "score-drift and defect-rate signals are judged against.",
    )
    reference_min_s: float = Field(
        0.0,
        ge=0.0,
        description="Least time the reference spans, from its first inspection to its last: it "
        "takes inspections until it has both reference_size of them and this span (a shift or a "
        "day of the line rather than its first minutes; every one is kept meanwhile).",
    )
    window_size: int = Field(
        500,
        ge=1,
        description="Latest inspections of the production version after its reference the "
        "score-drift and defect-rate signals are computed on.",
    )
    min_observations: int = Field(
        100, ge=1, description="Fewest inspections in the window before those signals are judged."
    )
    review_window_size: int = Field(
        200, ge=1, description="Latest reviewed inspections the rolling accuracy is computed on."
    )
    min_reviews: int = Field(
        30, ge=1, description="Fewest reviewed inspections before the accuracy is judged."
    )
    drift_bins: tuple[float, ...] = Field(
        DEFAULT_DRIFT_BINS,
        min_length=3,
        description="Edges of the fixed probability bins the population stability index (PSI) "
        "compares the window's scores with the reference's on, from 0 to 1.",
    )
    max_psi: float = Field(
        0.25, gt=0.0, description="PSI above which the scores have drifted (0.25: a major shift)."
    )
    psi_rearm: float = Field(
        0.1, gt=0.0, description="PSI below which the drift alarm re-arms (0.1: no real shift)."
    )
    max_defect_rate_shift: float = Field(
        0.05,
        gt=0.0,
        lt=1.0,
        description="How far the window's share of DEFECT verdicts may move from the reference's "
        "share, either way (absolute: 0.05 is a 1% line at 6%).",
    )
    defect_rate_rearm_shift: float = Field(
        0.025,
        gt=0.0,
        lt=1.0,
        description="How near the reference's share the window's must come back for the "
        "defect-rate alarm to re-arm (widened in proportion where noise widens an alarm bound).",
    )
    min_accuracy: float = Field(
        0.9,
        gt=0.0,
        lt=1.0,
        description="Rolling accuracy on reviewed inspections below which the model has degraded.",
    )
    accuracy_rearm: float = Field(
        0.93, gt=0.0, le=1.0, description="Rolling accuracy at or above which that alarm re-arms."
    )
    alpha: float = Field(
        0.001,
        gt=0.0,
        lt=0.5,
        description="Significance level: the score-drift and defect-rate alarms also need a "
        "difference that sampling noise of the reference and the window explains with "
        "probability below this (a chi-square bound on PSI, Fisher's exact test on the defect "
        "counts), so a short reference or window never alarms on chance alone.",
    )
    cooldown_s: float = Field(
        4 * 3600.0,
        ge=0.0,
        description="Least time between two training requests for one model, whatever signals "
        "fire meanwhile: a retraining takes its time to be trained, judged and deployed.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        edges = self.drift_bins
        if edges[0] != 0.0 or edges[-1] != 1.0:
            raise ValueError(f"drift_bins must run from 0 to 1, not {edges[0]:g} to {edges[-1]:g}")
        if any(low >= high for low, high in itertools.pairwise(edges)):
            raise ValueError("drift_bins must be strictly increasing")
        if self.min_observations > self.window_size:
            raise ValueError("min_observations must not exceed window_size")
        if self.min_reviews > self.review_window_size:
            raise ValueError("min_reviews must not exceed review_window_size")
        if self.psi_rearm >= self.max_psi:
            raise ValueError("psi_rearm must be below max_psi")
        if self.defect_rate_rearm_shift >= self.max_defect_rate_shift:
            raise ValueError("defect_rate_rearm_shift must be below max_defect_rate_shift")
        if self.accuracy_rearm <= self.min_accuracy:
            raise ValueError("accuracy_rearm must be above min_accuracy")
        return self

    def rules(self) -> Rules:
        """Just the rules (a settings object is one too), for the service to hold."""
        return Rules.model_validate({name: getattr(self, name) for name in Rules.model_fields})


class ControllerRules(BaseModel):
    """What the rollout controller tolerates of a canary, and how long it watches a new production.

    The registry's rollout policy says how many inspections and how long each step takes at
    least; these say what the figures must show. Kept apart from :class:`Rules` for the same
    reason: the controller (and its tests) take exactly these.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rollout_max_disagreement: float = Field(
        0.02,
        ge=0.0,
        lt=1.0,
        description="Share of images on which the canary's verdict may differ from production's "
        "on the same image: a canary is aborted once a one-sided binomial test says its share of "
        "disagreements is above this at rollout_alpha, and advances only while the share seen "
        "is at most this.",
    )
    rollout_alpha: float = Field(
        0.01,
        gt=0.0,
        lt=0.5,
        description="Significance level of the controller's tests (disagreement: binomial; "
        "reviewed accuracy: Fisher's exact, canary against production): a canary is aborted only "
        "on a difference chance explains with probability below this.",
    )
    rollout_min_compared: int = Field(
        100,
        ge=1,
        description="Fewest canary inspections with production's score on the same image before "
        "the disagreement is judged, and a step may advance.",
    )
    rollout_min_latency_samples: int = Field(
        100,
        ge=1,
        description="Fewest inspections of each side in a step before their p99 latencies are "
        "compared (a p99 of fewer is its maximum).",
    )
    rollout_p99_margin_ms: float = Field(
        10.0,
        ge=0.0,
        description="How much slower than production's the canary's p99 latency in a step may "
        "be, in milliseconds, beside rollout_p99_margin_ratio: aborted above "
        "production's p99 * (1 + ratio) + this.",
    )
    rollout_p99_margin_ratio: float = Field(
        0.2, ge=0.0, description="The relative part of that margin (0.2: 20 % slower)."
    )
    rollout_latency_window: int = Field(
        5000,
        ge=1,
        description="Latest latencies of each side kept per step for the p99 (memory bound).",
    )
    rollout_min_reviews: int = Field(
        30,
        ge=1,
        description="Fewest reviewed inspections of each side during the rollout before their "
        "accuracies are compared; with fewer, the reviews neither stop nor hold a step.",
    )
    rollout_min_calls: int = Field(
        100,
        ge=1,
        description="Fewest calls answering requests (from the gateways' metrics in Prometheus) "
        "of each side in a step before their error rates are compared by Fisher's exact test, "
        "and of a new production before its error rate is judged against watch_max_error_rate.",
    )
    errors_interval_s: float = Field(
        15.0,
        gt=0.0,
        description="How often the controller reads the error counts from Prometheus and "
        "judges the running canaries and the watched productions on them (a step whose time has "
        "passed is advanced then too, without waiting for an inspection).",
    )
    watch_window_s: float = Field(
        3600.0,
        ge=0.0,
        description="How long after production moves forward (model.deployed: a completed "
        "rollout, a promotion, a release) a fired alarm of the new version (score drift, defect "
        "rate, reviewed accuracy) or its error rate above watch_max_error_rate rolls production "
        "back; 0 turns that off.",
    )
    watch_max_error_rate: float = Field(
        0.01,
        ge=0.0,
        lt=1.0,
        description="The error-rate SLO of a new production in its watch window: rolled back "
        "once a one-sided binomial test says its share of failed calls is above this at "
        "rollout_alpha.",
    )

    def controller(self) -> ControllerRules:
        """Just the controller's rules (a settings object is one too)."""
        return ControllerRules.model_validate(
            {name: getattr(self, name) for name in ControllerRules.model_fields}
        )


class MonitorSettings(Rules, ControllerRules, ServiceSettings):
    """What an operator may tune in the monitor: the rules, the controller's rules, where the
    registry is and the basics."""

    model_config = SettingsConfigDict(
        env_prefix=MONITOR.env_prefix,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    service_name: str = MONITOR.name
    metrics_port: int = Field(MONITOR.metrics_port, ge=1, le=65535)
    registry_address: str = Field(
        f"127.0.0.1:{REGISTRY.grpc_port}",
        examples=[f"registry:{REGISTRY.grpc_port}"],
        description="The registry's gRPC API, which the rollout controller asks to advance, "
        "abort and roll back.",
    )
    judge_errors: bool = Field(
        True,
        description="Read the gateways' failed calls per version from the stack's Prometheus "
        "(SCREWOPS_TELEMETRY__PROMETHEUS_URL) and judge canaries and new productions on them; "
        "off, a canary advances on its other checks. While Prometheus does not answer, no "
        "canary advances.",
    )
    registry_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token sent to the registry, when it requires one: the monitor's "
        "principal's entry (role operator) in SCREWOPS_REGISTRY_AUTH_TOKENS; empty sends none.",
    )
