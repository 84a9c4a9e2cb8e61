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
    """Each signal's value, bound and state, the windows, and what was taken in and announced."""

    def __init__(
        self,
        *,
        signals: Gauge,
        thresholds: Gauge,
        fired: Gauge,
        windows: Gauge,
        reference: Gauge,
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
