"""Traces at production rates: a service keeps the configured share of the traces it starts
and follows the caller's decision for the rest, so a trace is kept whole or not at all."""

from __future__ import annotations

import pytest
from opentelemetry import propagate
from opentelemetry.context import Context
from screwops_settings import StackSettings, TelemetrySettings
from screwops_telemetry import setup_telemetry

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def caller(sampled: bool) -> Context:
    """The context a gRPC call or an event brings: the caller's span and its sampled flag."""
    flags = "01" if sampled else "00"
    return propagate.extract({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-{flags}"})


def sampled(ratio: float, parent: Context | None = None) -> bool:
    settings = StackSettings(telemetry=TelemetrySettings(trace_sample_ratio=ratio))
    telemetry = setup_telemetry("test", settings, metrics_port=None, set_global=False)
    try:
        span = telemetry.tracer_provider.get_tracer("test").start_span("call", context=parent)
        return span.is_recording() and span.get_span_context().trace_flags.sampled
    finally:
        telemetry.shutdown()


def test_a_sampled_caller_is_followed_even_at_ratio_zero() -> None:
    assert sampled(0.0, caller(sampled=True))


def test_an_unsampled_caller_is_followed_even_at_ratio_one() -> None:
    assert not sampled(1.0, caller(sampled=False))


def test_a_trace_started_here_is_kept_at_ratio_one_and_dropped_at_zero() -> None:
    assert sampled(1.0)
    assert not sampled(0.0)


def test_every_trace_is_kept_unless_configured() -> None:
    assert StackSettings().telemetry.trace_sample_ratio == 1.0


def test_the_ratio_is_read_from_the_environment_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCREWOPS_TELEMETRY__TRACE_SAMPLE_RATIO", "0.02")
    assert StackSettings().telemetry.trace_sample_ratio == 0.02
    monkeypatch.setenv("SCREWOPS_TELEMETRY__TRACE_SAMPLE_RATIO", "1.5")
    with pytest.raises(ValueError, match=r"telemetry\.trace_sample_ratio"):
        StackSettings()
