"""The trainer's metrics, in one place so every name and label is declared once.

Prometheus sees them with the usual suffixes (``_total`` for the counter, ``_bucket``/``_sum``/
``_count`` for the histogram).
"""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider


class TrainerMetrics:
    """Runs answered, by outcome, and the time spent fitting."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("screwops.trainer")
        self._runs = meter.create_counter(
            "screwops_trainer_runs",
            description="Runs answered with model.trained or failed, by outcome "
            "(trained, reused, failed).",
        )
        self._duration = meter.create_histogram(
            "screwops_trainer_training_duration",
            unit="s",
            description="Time spent fitting a network, per trained run.",
        )

    def answered(self, outcome: str) -> None:
        """Count one run answered: ``trained``, ``reused`` or ``failed``."""
        self._runs.add(1, {"outcome": outcome})

    def fitted(self, seconds: float) -> None:
        """Record the time one run spent fitting its network."""
        self._duration.record(seconds)
