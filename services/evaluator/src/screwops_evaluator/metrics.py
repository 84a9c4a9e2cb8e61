"""The evaluator's metrics, in one place so every name and label is declared once.

Prometheus sees them with the usual suffixes (``_total`` for the counter, ``_bucket``/``_sum``/
``_count`` for the histogram).
"""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider


class EvaluatorMetrics:
    """Runs judged and how long judging them took."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("screwops.evaluator")
        self._verdicts = meter.create_counter(
            "screwops_evaluator_evaluations",
            description="Runs judged, by verdict (approved, rejected) and whether the candidate "
            "could be served.",
        )
        self._duration = meter.create_histogram(
            "screwops_evaluator_evaluation_duration",
            unit="s",
            description="Time to judge one run: fetching, serving, scoring and comparing.",
        )

    def judged(self, *, passed: bool, served: bool, seconds: float) -> None:
        """Count one run judged (not one announced again) and how long judging it took."""
        outcome = {"verdict": "approved" if passed else "rejected", "served": served}
        self._verdicts.add(1, outcome)
        self._duration.record(seconds, outcome)
