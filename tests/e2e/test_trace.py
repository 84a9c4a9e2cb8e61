"""One pipeline run is one trace: from the ingestion's Upload call (what ``screwops ingest``
sends) through every Kafka hop to ``model.deployed`` (and the gateway adopting it), each
consumer's span the child of the span that published its event, read back from Jaeger's query
API. One inspection is one trace too: the caller's, continued by the gateway through its Triton
call and its prediction-log publish."""

from __future__ import annotations

import itertools
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_contracts import Topic
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings

from tests.e2e.runs import GATEWAY, HOPS, FinishedRun, finished_run
from tests.support import eventually, screw_png

Span = dict[str, Any]
# The gateway's request span (gRPC server) and its Triton call (gRPC client), named by method.
INSPECT = "/screwops.v1.InspectionService/Inspect"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


class Trace:
    """A trace as Jaeger's ``/api/traces/<id>`` returns it, indexed by span id."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.spans: dict[str, Span] = {span["spanID"]: span for span in data["spans"]}
        self.services = {pid: p["serviceName"] for pid, p in data["processes"].items()}

    def service(self, span: Span) -> str:
        return str(self.services[span["processID"]])

    def parent(self, span: Span) -> Span | None:
        parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
        return self.spans.get(parents[0]) if parents else None

    def missing_parents(self) -> list[str]:
        """Spans whose parent is not (yet) in the trace: a broken chain, or spans in transit."""
        return [
            f"{self.service(s)}: {s['operationName']}"
            for s in self.spans.values()
            for r in s["references"]
            if r["refType"] == "CHILD_OF" and r["spanID"] not in self.spans
        ]

    def path(self, span_id: str) -> list[Span]:
        """The spans from the root down to ``span_id``."""
        chain: list[Span] = []
        span: Span | None = self.spans[span_id]
        while span is not None:
            chain.append(span)
            span = self.parent(span)
        return chain[::-1]

    def named(self, service: str, operation: str) -> list[Span]:
        return [
            s
            for s in self.spans.values()
            if self.service(s) == service and s["operationName"] == operation
        ]


async def fetch_trace(settings: StackSettings, trace_id: str) -> Trace | None:
    """The trace as Jaeger has it now; None before its first span arrived."""
    async with httpx.AsyncClient(base_url=settings.telemetry.jaeger_query_url) as http:
        response = await http.get(f"/api/traces/{trace_id}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    [data] = response.json()["data"]
    return Trace(data)


async def complete_trace(settings: StackSettings, run: FinishedRun) -> Trace:
    """The run's trace once every span of the chain reached Jaeger (services export in batches
    every few seconds, so the last hops may arrive a little after the event)."""

    async def complete() -> Trace | None:
        trace = await fetch_trace(settings, run.trace_id)
        if trace is None:
            return None
        consumed = all(trace.named(consumer, f"{topic} process") for _, topic, consumer in HOPS)
        if run.span_id in trace.spans and consumed and not trace.missing_parents():
            return trace
        return None

    return await eventually(complete, within=90, what=f"trace {run.trace_id} complete in Jaeger")


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(1200)  # a run of its own when no other test made one: minutes
async def test_a_pipeline_run_is_one_trace_in_causal_order(tmp_path: Path) -> None:
    settings = StackSettings()
    run = await finished_run(settings, tmp_path)
    trace = await complete_trace(settings, run)

    # The span that published model.deployed descends, hop by hop, from the Upload call.
    path = trace.path(run.span_id)
    services = [trace.service(s) for s in path]
    hops = [services[0]] + [b for a, b in itertools.pairwise(services) if a != b]
    pipeline = [producer for producer, _, _ in HOPS]
    assert hops[-len(pipeline) :] == pipeline, f"the chain of services was {hops}"
    first_ingestion = next(s for s in path if trace.service(s) == "ingestion")
    # screwops ingest streams the files through Upload (the server-side Import is an option).
    assert first_ingestion["operationName"] == "/screwops.v1.IngestionService/Upload"
    starts = [s["startTime"] for s in path]
    assert starts == sorted(starts), "a span on the chain starts before its parent"

    # Each consumer continued from the span that published its event, in the same trace.
    on_path = {s["spanID"] for s in path}
    for producer, topic, consumer in HOPS:
        [created] = [s for s in trace.named(producer, f"{topic} create") if s["spanID"] in on_path]
        processed = trace.named(consumer, f"{topic} process")
        assert any(trace.parent(s) is created for s in processed), (
            f"{consumer}'s '{topic} process' is not a child of {producer}'s '{topic} create'"
        )
        assert created["traceID"] == run.trace_id
    roots = [s for s in trace.spans.values() if trace.parent(s) is None]
    assert len(roots) == 1, [f"{trace.service(s)}: {s['operationName']}" for s in roots]
    took = (path[-1]["startTime"] - path[0]["startTime"]) / 1e6
    print(
        f"trace {run.trace_id} of run {run.correlation_id}: {len(trace.spans)} spans, "
        f"Upload to model.deployed in {took:.0f}s, services {sorted(set(trace.services.values()))}"
    )


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(1200)  # a run of its own when no other test made one: minutes
async def test_an_inspection_continues_the_callers_trace_through_the_triton_call(
    tmp_path: Path,
) -> None:
    settings = StackSettings()
    run = await finished_run(settings, tmp_path)
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)

    async with open_aio_channel(GATEWAY) as channel:
        gateway: Any = inspection_pb2_grpc.InspectionServiceStub(channel)
        answer = await gateway.Inspect(
            inspection_pb2.InspectRequest(
                image=screw_png(0),
                line_id="line-e2e",
                camera_id="cam-trace",
                model_version=run.deployed.payload.version,
            ),
            metadata=(("traceparent", f"00-{trace_id}-{caller_span}-01"),),
            timeout=30,
        )
    assert answer.trace_id == trace_id

    async def spans() -> Trace | None:
        trace = await fetch_trace(settings, trace_id)
        if trace is None:
            return None
        published = trace.named("gateway", f"{Topic.INSPECTION_COMPLETED} create")
        return trace if published and trace.named("gateway", INSPECT) else None

    trace = await eventually(spans, within=60, what=f"inspection trace {trace_id} in Jaeger")
    [server] = trace.named("gateway", INSPECT)
    assert [r["spanID"] for r in server["references"]] == [caller_span]
    [triton] = trace.named("gateway", MODEL_INFER)
    assert trace.parent(triton) is server
    tags = {tag["key"]: tag["value"] for tag in server["tags"]}
    assert tags["screwops.model_version"] == run.deployed.payload.version
    assert tags["screwops.inspection_id"] == answer.inspection_id
    [published] = trace.named("gateway", f"{Topic.INSPECTION_COMPLETED} create")
    assert server["spanID"] in {s["spanID"] for s in trace.path(published["spanID"])}
