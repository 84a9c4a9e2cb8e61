"""The monitor's metrics, in one place so every name and label is declared once.

The gauges are read when Prometheus scrapes: the service hands in the callbacks that read its
windows, and they run on the exporter's thread. Prometheus sees the counters with ``_total``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

Gauge = Callable[[CallbackOptions], Iterable[Observation]]


class MonitorMetrics:
    """Each signal's value, bound and state, the windows, what was taken in and announced, and
    the rollout controller's figures and decisions."""

    def __init__(
        self,
        *,
        signals: Gauge,
        thresholds: Gauge,
        fired: Gauge,
        windows: Gauge,
        reference: Gauge,
        rollout_disagreement: Gauge,
        rollout_samples: Gauge,
        rollout_p99: Gauge,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("screwops.monitor")
        meter.create_observable_gauge(
            "screwops_monitor_signal",
            callbacks=[signals],
            description="Each signal's value over its window, by model, version and signal "
            "(score_drift: PSI; defect_rate: share of DEFECT verdicts; accuracy: share right).",
        )
        meter.create_observable_gauge(
            "screwops_monitor_signal_threshold",
            callbacks=[thresholds],
            description="Where each signal alarms, by model, version, signal and bound (upper: "
            "alarms above it, lower: below it).",
        )
        meter.create_observable_gauge(
            "screwops_monitor_signal_fired",
            callbacks=[fired],
            description="1 while a signal's alarm has fired and not re-armed, else 0.",
        )
        meter.create_observable_gauge(
            "screwops_monitor_window",
            callbacks=[windows],
            description="Observations in each window (reference, inspections, reviews), by model "
            "and version.",
        )
        meter.create_observable_gauge(
            "screwops_monitor_reference",
            callbacks=[reference],
            description="The full reference window beside the version's evaluation, by model, "
            "version and figure (defect_rate: the reference's share of DEFECT at the latest "
            "threshold; evaluation_defect_rate: the test split's; evaluation_psi: PSI between the "
            "two score distributions). A sanity check, never alarmed on.",
        )
        self._rollout_decisions = _rollout_instruments(
            meter, rollout_disagreement, rollout_samples, rollout_p99
        )
        self._observed = meter.create_counter(
            "screwops_monitor_observations",
            description="Inspections and reviews taken in (outcome counted) or left out because "
            "another version answered them (outcome not_production).",
        )
        self._alarms = meter.create_counter(
            "screwops_monitor_alarms",
            description="model.degraded announced, by model and signal.",
        )
        self._requests = meter.create_counter(
            "screwops_monitor_training_requests",
            description="Retraining decisions, by model and outcome (requested; cooldown: "
            "suppressed by the cooldown; no_dataset: no baseline names the data to train on).",
        )

    def observed(self, kind: str, outcome: str) -> None:
        """Count one inspection or review (``kind``) taken in or left out (``outcome``)."""
        self._observed.add(1, {"kind": kind, "outcome": outcome})

    def alarmed(self, model: str, signal: str) -> None:
        """Count one model.degraded announced."""
        self._alarms.add(1, {"model": model, "signal": signal})

    def training_decided(self, model: str, outcome: str) -> None:
        """Count one retraining decision: ``requested``, ``cooldown`` or ``no_dataset``."""
        self._requests.add(1, {"model": model, "outcome": outcome})

    def rollout_decided(self, model: str, decision: str, outcome: str) -> None:
        """Count one request of the controller: ``advance``, ``abort`` or ``rollback``, and
        whether it was ``done``, ``refused`` or ``failed``."""
        self._rollout_decisions.add(1, {"model": model, "decision": decision, "outcome": outcome})


def _rollout_instruments(
    meter: metrics.Meter, disagreement: Gauge, samples: Gauge, p99: Gauge
) -> metrics.Counter:
    """The rollout controller's gauges, and its decisions' counter (returned)."""
    meter.create_observable_gauge(
        "screwops_monitor_rollout_disagreement",
        callbacks=[disagreement],
        description="Share of compared images on which the rollout's candidate and production "
        "gave different verdicts, over the rollout so far, by model, rollout, strategy and "
        "step.",
    )
    meter.create_observable_gauge(
        "screwops_monitor_rollout_sample",
        callbacks=[samples],
        description="The rollout's sample sizes, by model, rollout, strategy, step and figure "
        "(compared: images both sides scored, over the rollout; canary, production: each "
        "side's inspections in the step; canary_reviews, production_reviews: reviews during "
        "the rollout).",
    )
    meter.create_observable_gauge(
        "screwops_monitor_rollout_p99_latency",
        unit="ms",
        callbacks=[p99],
        description="p99 of the gateway's latency for each side's inspections in the "
        "rollout's step, by model, rollout, strategy, step and role.",
    )
    return meter.create_counter(
        "screwops_monitor_rollout_decisions",
        description="The rollout controller's requests to the registry, by model, decision "
        "(advance, abort, rollback) and outcome (done; refused: the rollout or production "
        "had moved on; failed: the registry did not answer, asked again later).",
    )
