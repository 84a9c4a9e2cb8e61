"""The event loop's lag, measured from inside the loop, for every service."""

from __future__ import annotations

import asyncio
import time

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider

# Fine below 25 ms, where a healthy loop's lag lies and the gateway's limit (20 ms at p99.9) is.
LOOP_LAG_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.015,
    0.02,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class LoopLag:
    """A ticker inside the event loop: asks to wake every ``interval_s`` and records how much
    later than asked it woke (``screwops_event_loop_lag_seconds``).

    That lateness is how long some callback held the loop, which every other request waited for:
    a decode, a sort or a blocking call that slipped onto the loop shows here, where request
    latencies blur it with the work that was legitimately slow.
    """

    def __init__(self, meter_provider: MeterProvider | None = None, interval_s: float = 0.01):
        self.interval_s = interval_s
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("screwops.runtime")
        self._lag = meter.create_histogram(
            "screwops_event_loop_lag",
            unit="s",
            description="How much later than asked the event loop ran a ticker due every "
            "10 ms: the time some callback held the loop.",
            explicit_bucket_boundaries_advisory=list(LOOP_LAG_BUCKETS_S),
        )

    async def run(self) -> None:
        """Tick until cancelled."""
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self._lag.record(max(0.0, time.perf_counter() - asked - self.interval_s))
