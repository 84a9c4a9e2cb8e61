"""Telemetry against the real Jaeger: spans reach it under the service's name, metrics are served
in Prometheus' format, and log records carry the trace id of the span they were written in.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from screwops_settings import StackSettings
from screwops_telemetry import NAMESPACE, TraceContextFilter, setup_telemetry, trace_id_hex

from tests.support import eventually, free_port, unique


async def test_a_span_reaches_jaeger_under_the_service_name(settings: StackSettings) -> None:
    service = unique("it-telemetry")
    telemetry = setup_telemetry(
        service, settings, metrics_port=None, service_version="1.2.3", set_global=False
    )
    tracer = telemetry.tracer_provider.get_tracer("it")
    with tracer.start_as_current_span("inspect-screw") as span:
        span.set_attribute("screw.line", "L1")
        trace_id = trace_id_hex()
    assert trace_id == format(span.get_span_context().trace_id, "032x")
    assert trace_id_hex() == ""
    telemetry.shutdown()

    async def traces() -> list[dict[str, Any]] | None:
        async with httpx.AsyncClient(base_url=settings.telemetry.jaeger_query_url) as http:
            response = await http.get("/api/traces", params={"service": service})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        return data or None

    found = await eventually(traces, within=30, what=f"a trace of {service} in Jaeger")
    assert [t["traceID"] for t in found] == [trace_id]
    spans = found[0]["spans"]
    # OTLP export is at-least-once: an export retried after a slow acknowledgement is stored
    # twice, so the span is counted by its id.
    assert {(s["spanID"], s["operationName"]) for s in spans} == {
        (format(span.get_span_context().span_id, "016x"), "inspect-screw")
    }
    process_tags = {
        t["key"]: t["value"] for t in found[0]["processes"][spans[0]["processID"]]["tags"]
    }
    assert process_tags["service.namespace"] == NAMESPACE
    assert process_tags["service.version"] == "1.2.3"


async def test_a_counter_is_served_in_the_prometheus_text_format(settings: StackSettings) -> None:
    port = free_port()
    telemetry = setup_telemetry(unique("it-metrics"), settings, metrics_port=port, set_global=False)
    try:
        assert telemetry.metrics_port == port
        meter = telemetry.meter_provider.get_meter("it")
        inspected = meter.create_counter("screws_inspected", description="Screws inspected.")
        inspected.add(3, {"verdict": "good"})
        inspected.add(1, {"verdict": "defect"})

        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
        response.raise_for_status()
        families = {f.name: f for f in text_string_to_metric_families(response.text)}

        counter = families["screws_inspected"]
        assert counter.type == "counter"
        assert {
            s.labels["verdict"]: s.value for s in counter.samples if s.name.endswith("_total")
        } == {
            "good": 3,
            "defect": 1,
        }
        assert "process_resident_memory_bytes" in families
    finally:
        telemetry.shutdown()

    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/metrics")


def test_log_records_carry_the_current_trace_and_span(settings: StackSettings) -> None:
    telemetry = setup_telemetry(unique("it-logs"), settings, metrics_port=None, set_global=False)
    stamp = TraceContextFilter()
    try:
        outside = logging.LogRecord("it", logging.INFO, __file__, 1, "outside", None, None)
        assert stamp.filter(outside)
        assert (outside.__dict__["trace_id"], outside.__dict__["span_id"]) == ("-", "-")

        with telemetry.tracer_provider.get_tracer("it").start_as_current_span("s") as span:
            inside = logging.LogRecord("it", logging.INFO, __file__, 1, "inside", None, None)
            stamp.filter(inside)
        context = span.get_span_context()
        assert inside.__dict__["trace_id"] == format(context.trace_id, "032x")
        assert inside.__dict__["span_id"] == format(context.span_id, "016x")
    finally:
        telemetry.shutdown()
