"""The metrics of fenced claims (``screwops_storage.claims``), alike in every service that
claims attempts at its work."""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider

__all__ = ["ClaimMetrics"]


class ClaimMetrics:
    """Attempts whose result was discarded because their claim was taken over, and objects of
    attempts that lost swept away; a steady rate of either says ``max_run_s`` or the heartbeat
    is too short for the work."""

    def __init__(self, service: str, meter_provider: MeterProvider | None = None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(f"screwops.{service}")
        self._lost = meter.create_counter(
            "screwops_attempts_lost",
            description="Attempts that lost their claim to a later one before committing: "
            "their result was discarded, nothing of it recorded or announced.",
        )
        self._swept = meter.create_counter(
            "screwops_attempt_objects_swept",
            description="Objects written by attempts that lost (no record references them), "
            "deleted by the periodic sweep.",
        )

    def lost(self) -> None:
        """Count one attempt's result discarded."""
        self._lost.add(1)

    def swept(self, objects: int) -> None:
        """Count ``objects`` deleted by one sweep."""
        self._swept.add(objects)
