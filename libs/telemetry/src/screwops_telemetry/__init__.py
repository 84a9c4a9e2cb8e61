"""One call that gives a service its traces, metrics and trace-stamped logs.

Traces go over OTLP to Jaeger so one trace can follow an image through every service; metrics
are served for Prometheus to scrape from each service's own port; log lines carry the trace id
so a log line leads to its trace. Traces are sampled (:func:`sampler`); metrics are not, so
errors and latency are counted whichever traces are kept. Every service calls
:func:`setup_telemetry` once in ``__main__.py`` before it builds its gRPC server or channels.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from opentelemetry import metrics, propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from screwops_settings import StackSettings

from screwops_telemetry.loop_lag import LOOP_LAG_BUCKETS_S, LoopLag
from screwops_telemetry.rpc_metrics import RpcServerMetrics

__all__ = [
    "LOOP_LAG_BUCKETS_S",
    "NAMESPACE",
    "LoopLag",
    "RpcServerMetrics",
    "Telemetry",
    "TraceContextFilter",
    "resumed_trace",
    "sampler",
    "setup_telemetry",
    "trace_id_hex",
    "traceparent",
]

NAMESPACE = "screwops"
"""``service.namespace`` of every service, so Jaeger and Prometheus can select the whole system."""

_GrpcInstrumentor = GrpcAioInstrumentorServer | GrpcAioInstrumentorClient
_LOG_HANDLER_NAME = "screwops"
_LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s"
)


@dataclass
class Telemetry:
    """The providers a service was given, and the one call that flushes them on the way out."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    metrics_port: int | None = None
    """The port Prometheus scrapes (the bound one, when 0 was asked for); None when not served."""
    _metrics_server: WSGIServer | None = field(default=None, repr=False)
    _instrumentors: list[_GrpcInstrumentor] = field(default_factory=list, repr=False)

    def shutdown(self) -> None:
        """Export the spans still queued and free the metrics port, so nothing is lost on exit."""
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()


class TraceContextFilter(logging.Filter):
    """Stamp each log record with the current trace and span ids (``-`` outside any span).

    It sits on the handler rather than on a logger so records from every library logger, which
    reach the root handler by propagation, are stamped too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.__dict__["trace_id"] = trace_id_hex() or "-"
        record.__dict__["span_id"] = format(context.span_id, "016x") if context.is_valid else "-"
        return True


def trace_id_hex() -> str:
    """The current trace id as 32 hex digits, or "" outside a trace.

    Services put it into events and gRPC responses so a verdict or a failure can be looked up in
    Jaeger directly.
    """
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def traceparent() -> str:
    """The current span as a W3C ``traceparent`` value, or "" outside a trace.

    A service keeps it with work it finishes later (an outbox record, a dataset version waiting
    for labels), so :func:`resumed_trace` can put that later work back into the same trace.
    """
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


@contextmanager
def resumed_trace(
    parent: str, name: str, *, tracer_provider: trace.TracerProvider | None = None
) -> Iterator[None]:
    """Run the block in the trace of ``parent`` (a :func:`traceparent` kept earlier).

    Inside that trace already (the usual case: the work is finished by the request that started
    it), the block runs as it is. Otherwise (an outbox published after a restart, a version whose
    last label came from a person hours later) the block runs under a new span ``name``, a child
    of ``parent``, linked to the span that is current here, so one pipeline run stays one trace
    and the request that finished it still leads to it.
    """
    resumed = trace.get_current_span(propagate.extract({"traceparent": parent}))
    context = resumed.get_span_context()
    here = trace.get_current_span().get_span_context()
    if not context.is_valid or (here.is_valid and here.trace_id == context.trace_id):
        yield
        return
    links = [trace.Link(here)] if here.is_valid else []
    tracer = trace.get_tracer("screwops.telemetry", tracer_provider=tracer_provider)
    with tracer.start_as_current_span(
        name, context=trace.set_span_in_context(resumed), links=links
    ):
        yield


def setup_telemetry(
    service_name: str,
    settings: StackSettings,
    *,
    metrics_port: int | None,
    metrics_host: str = "127.0.0.1",
    instrument_grpc: bool = False,
    log_level: str = "INFO",
    service_version: str | None = None,
    set_global: bool = True,
) -> Telemetry:
    """Wire tracing, metrics and logging for ``service_name``; call once, early in ``__main__``.

    Args:
        service_name: ``service.name`` in Jaeger and Prometheus.
        settings: where the OTLP collector listens, and the share of traces to keep.
        metrics_port: the port of the Prometheus endpoint (0 picks a free one); None serves no
            metrics, for one-off jobs that Prometheus could not scrape anyway.
        metrics_host: the endpoint's interface; loopback unless the scraper runs elsewhere.
        instrument_grpc: trace every ``grpc.aio`` server and channel created after this call.
        log_level: the root logger's level.
        service_version: defaults to the installed version of ``screwops-<service_name>``.
        set_global: install the providers and the log handler process-wide. OpenTelemetry lets
            a process set its global providers only once, so tests pass False and use the
            returned providers directly.
    """
    resource = Resource.create(
        {
            "service.name": service_name,
            "service.namespace": NAMESPACE,
            "service.version": service_version or _installed_version(service_name),
            "deployment.environment.name": settings.environment,
        }
    )
    tracer_provider = TracerProvider(
        resource=resource, sampler=sampler(settings.telemetry.trace_sample_ratio)
    )
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=settings.telemetry.otlp_grpc_endpoint, insecure=True)
        )
    )
    readers: list[MetricReader] = []
    server: WSGIServer | None = None
    if metrics_port is not None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        readers.append(PrometheusMetricReader(registry=registry))
        server, _ = start_http_server(metrics_port, addr=metrics_host, registry=registry)
    instrumentors: list[_GrpcInstrumentor] = []
    if instrument_grpc:
        # The instrumentation package ships untyped constructors.
        instrumentors = [
            GrpcAioInstrumentorServer(),  # type: ignore[no-untyped-call]
            GrpcAioInstrumentorClient(),  # type: ignore[no-untyped-call]
        ]
        for instrumentor in instrumentors:
            instrumentor.instrument(tracer_provider=tracer_provider)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        _configure_logging(log_level)
    return Telemetry(
        tracer_provider,
        meter_provider,
        metrics_port=server.server_port if server else None,
        _metrics_server=server,
        _instrumentors=instrumentors,
    )


def sampler(ratio: float) -> Sampler:
    """Keep ``ratio`` of the traces started here, and whatever a caller decided for its own.

    The ratio is applied to the trace id, so every service that starts a span of the same trace
    without a parent would decide alike; a span with a parent (a gRPC call's ``traceparent``, an
    event's, a :func:`resumed_trace`) follows the parent's sampled flag, so a trace is kept
    whole or not at all rather than in pieces from the services that happened to pick it.
    """
    return ParentBased(TraceIdRatioBased(ratio))


def _installed_version(service_name: str) -> str:
    try:
        return importlib.metadata.version(f"screwops-{service_name}")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _configure_logging(level: str) -> None:
    """Install the trace-stamping handler on the root logger once; later calls set the level."""
    root = logging.getLogger()
    root.setLevel(level)
    if any(handler.get_name() == _LOG_HANDLER_NAME for handler in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_LOG_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.addFilter(TraceContextFilter())
    root.addHandler(handler)
