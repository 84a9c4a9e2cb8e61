"""Jaeger is a real trace store: a span exported over OTLP is read back from its query API."""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from screwops_settings import StackSettings

from tests.support import eventually, unique


async def test_a_span_exported_over_otlp_is_read_back(settings: StackSettings) -> None:
    service = unique("it-otlp")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=settings.telemetry.otlp_grpc_endpoint, insecure=True)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("it").start_as_current_span("inspect-screw") as span:
        span.set_attribute("screw.line", "L1")
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()

    async def trace() -> dict[str, Any] | None:
        async with httpx.AsyncClient(base_url=settings.telemetry.jaeger_query_url) as http:
            response = await http.get(f"/api/traces/{trace_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        return data[0] if data else None

    found = await eventually(trace, within=30, what=f"trace {trace_id} in Jaeger")
    spans = found["spans"]
    # At-least-once export: a retried export is stored twice; the span is counted by its id.
    assert {(s["spanID"], s["operationName"]) for s in spans} == {
        (format(span.get_span_context().span_id, "016x"), "inspect-screw")
    }
    assert {"key": "screw.line", "type": "string", "value": "L1"} in spans[0]["tags"]
    assert found["processes"][spans[0]["processID"]]["serviceName"] == service
