"""Every gRPC call a service answers, counted by method and status, with its duration."""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider

# A call to an API takes milliseconds (a lookup) to minutes (an import, a promotion that loads
# a model into Triton).
RPC_DURATION_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


class RpcServerMetrics:
    """``screwops_rpc_server_calls_total`` and ``screwops_rpc_server_call_duration_seconds``,
    labelled by ``method`` (the full gRPC name, so bounded by the API) and ``status`` (the gRPC
    status name).

    Traces are sampled, so these are what an error rate, a latency alert or a dashboard reads:
    they count every call, traced or not. :meth:`record` is the ``record`` of
    ``screwops_rpc.Server.count_calls``.
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("screwops.rpc")
        self._calls = meter.create_counter(
            "screwops_rpc_server_calls",
            description="gRPC calls answered, by method and status.",
        )
        self._duration = meter.create_histogram(
            "screwops_rpc_server_call_duration",
            unit="s",
            description="Time from a gRPC call's arrival to its end, by method and status.",
            explicit_bucket_boundaries_advisory=list(RPC_DURATION_BUCKETS_S),
        )

    def record(self, method: str, status: str, seconds: float) -> None:
        """Count one call of ``method`` that ended with ``status`` after ``seconds``."""
        labels = {"method": method, "status": status}
        self._calls.add(1, labels)
        self._duration.record(seconds, labels)
