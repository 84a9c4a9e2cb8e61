"""Work finished later stays in the trace that started it: ``traceparent`` keeps the current
span, ``resumed_trace`` puts later work back under it. Ingestion's announcement, relayed after
Kafka refused it, and a labeling version ended by a person's last label go out in the run's
trace."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from screwops_bus import Relay
from screwops_contracts import DatasetLabeled, Event
from screwops_contracts.datasets import Label
from screwops_contracts.layouts import IncomingFile
from screwops_ingestion.config import Limits, Rules
from screwops_ingestion.service import IngestionService
from screwops_telemetry import resumed_trace, traceparent

from tests.fakes import FakeObjects
from tests.support import png
from tests.unit.ingestion.fakes import FakeStore
from tests.unit.labeling.fakes import harness


def tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def current_trace_id() -> int:
    return trace.get_current_span().get_span_context().trace_id


def test_outside_any_trace_there_is_nothing_to_keep_or_resume() -> None:
    provider, exporter = tracing()
    assert traceparent() == ""
    with resumed_trace("", "later", tracer_provider=provider):
        assert current_trace_id() == 0
    assert exporter.get_finished_spans() == ()


def test_work_resumed_elsewhere_is_a_child_of_the_kept_span_linked_to_the_current_one() -> None:
    provider, exporter = tracing()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        kept = traceparent()
    assert kept.split("-")[1] == format(request.get_span_context().trace_id, "032x")

    with (
        tracer.start_as_current_span("another request") as other,
        resumed_trace(kept, "later", tracer_provider=provider),
    ):
        assert current_trace_id() == request.get_span_context().trace_id
    later = next(s for s in exporter.get_finished_spans() if s.name == "later")
    assert later.parent is not None
    assert later.parent.span_id == request.get_span_context().span_id
    assert [link.context.span_id for link in later.links] == [other.get_span_context().span_id]


def test_work_resumed_in_its_own_trace_adds_no_span() -> None:
    provider, exporter = tracing()
    with provider.get_tracer("test").start_as_current_span("request"):
        kept = traceparent()
        with resumed_trace(kept, "later", tracer_provider=provider):
            pass
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]


async def test_an_announcement_relayed_after_a_refused_publish_joins_the_trace_of_its_request() -> (
    None
):
    provider, _ = tracing()
    store, objects = FakeStore(), FakeObjects()
    rules = Rules(Limits(max_bytes=50_000, max_pixels=512 * 512, concurrency=2), ("/",))

    async def crash(event: Event[Any]) -> None:
        raise ConnectionError("kafka went away")

    files = [IncomingFile("0.png", png(32, seed=1), label=Label.GOOD)]
    with provider.get_tracer("test").start_as_current_span("Import") as request:
        await IngestionService(store, objects, crash, rules=rules).ingest(
            "screws", files, source="upload"
        )
    published: list[int] = []

    async def publish(event: Event[Any]) -> None:
        published.append(current_trace_id())

    await Relay(store, publish).relay()
    assert published == [request.get_span_context().trace_id]


async def test_a_version_ended_by_a_persons_last_label_is_announced_in_the_runs_trace() -> None:
    provider, _ = tracing()
    traces: list[int] = []

    async def publish(event: Event[Any]) -> None:
        traces.append(current_trace_id())
        await h.emitted.publish(event)

    h = harness(publish=publish)
    event, [image] = h.ingest("screws", 1, [("0.png", None)])
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("dataset.ingested process") as delivery:
        await h.service.on_dataset_ingested(event)
    with tracer.start_as_current_span("SubmitLabel"):
        await h.service.submit_label("screws", image.sha256, Label.GOOD, annotator="ana")

    assert [type(e) for e in h.emitted] == [DatasetLabeled]
    assert traces == [delivery.get_span_context().trace_id]
