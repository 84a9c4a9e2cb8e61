"""The console's metrics, in one place so every name and label is declared once.

Prometheus sees them with the usual suffixes (``_total`` for the counter, ``_bucket``/``_sum``/
``_count`` for the histogram).
"""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider


class ConsoleMetrics:
    """HTTP requests and their latency, by route, method and status."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("screwops.console")
        self._requests = meter.create_counter(
            "screwops_console_requests", description="HTTP requests, by route and status."
        )
        self._latency = meter.create_histogram(
            "screwops_console_request_duration",
            unit="s",
            description="Time to answer an HTTP request, by route and status.",
        )

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request answered with ``status`` and how long answering it took."""
        labels = {"route": route, "method": method, "status": str(status)}
        self._requests.add(1, labels)
        self._latency.record(seconds, labels)
