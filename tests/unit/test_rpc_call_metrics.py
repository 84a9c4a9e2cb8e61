"""Errors and latency are counted in metrics whatever the trace sampler keeps: every call an API
server answers is counted by method and the status it ended with, refused and failed ones too,
with its duration."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic import SecretStr
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_errors import NotFoundError
from screwops_rpc import Api, Server, bearer_auth, map_errors, method_roles, open_aio_channel
from screwops_settings import ApiToken, Role
from screwops_telemetry import RpcServerMetrics

TOKEN = "a-token-of-sixteen-chars"
SERVICE = "screwops.v1.InspectionService"
INSPECT = f"/{SERVICE}/Inspect"
STREAM = f"/{SERVICE}/InspectStream"


class Answers(inspection_pb2_grpc.InspectionServiceServicer):
    """Inspect answers by the request's line: ok, missing (a typed error), crash, slow."""

    @map_errors
    async def Inspect(  # noqa: N802 - the generated method name
        self, request: inspection_pb2.InspectRequest, context: Any
    ) -> inspection_pb2.InspectResponse:
        if request.line_id == "missing":
            raise NotFoundError("no such version")
        if request.line_id == "slow":
            await asyncio.sleep(5)
        return inspection_pb2.InspectResponse(request_id=request.request_id)

    async def InspectStream(  # noqa: N802 - the generated method name
        self, requests: Any, context: Any
    ) -> AsyncIterator[inspection_pb2.InspectResponse]:
        async for request in requests:
            if request.line_id == "crash":
                raise RuntimeError("unexpected")
            yield inspection_pb2.InspectResponse(request_id=request.request_id)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    tokens = [ApiToken(principal="line-1", role=Role.LINE, token=SecretStr(TOKEN))]
    roles = method_roles(SERVICE, {"Inspect": Role.LINE, "InspectStream": Role.LINE})
    server = Server(
        [Api(SERVICE, inspection_pb2_grpc.add_InspectionServiceServicer_to_server, Answers())],
        host="127.0.0.1",
        port=0,
        interceptors=bearer_auth(tokens, roles),
    )
    server.count_calls(RpcServerMetrics(MeterProvider(metric_readers=[reader])).record)
    await server.start()
    yield server, reader
    await server.stop(0)


def counted(reader: InMemoryMetricReader) -> dict[tuple[str, str], tuple[int, int]]:
    """(method, status) -> (calls counted, durations recorded)."""
    data = reader.get_metrics_data()
    assert data is not None
    calls: dict[tuple[str, str], int] = {}
    durations: dict[tuple[str, str], int] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    labels = point.attributes or {}
                    key = (str(labels["method"]), str(labels["status"]))
                    if metric.name == "screwops_rpc_server_calls":
                        calls[key] = int(point.value)  # type: ignore[union-attr]
                    elif metric.name == "screwops_rpc_server_call_duration":
                        durations[key] = int(point.count)  # type: ignore[union-attr]
    return {key: (calls[key], durations.get(key, 0)) for key in calls}


async def test_every_call_is_counted_with_the_status_it_ended_in(
    served: tuple[Server, InMemoryMetricReader],
) -> None:
    server, reader = served
    target = f"127.0.0.1:{server.port}"

    async def inspect(line: str, token: str | None = TOKEN, deadline_s: float = 5) -> None:
        async with open_aio_channel(target, token) as channel:
            stub = inspection_pb2_grpc.InspectionServiceStub(channel)
            request = inspection_pb2.InspectRequest(line_id=line)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Inspect(request, timeout=deadline_s)

    await inspect("ok")
    await inspect("ok")
    await inspect("missing")
    await inspect("ok", token=None)
    await inspect("slow", deadline_s=0.2)
    async with open_aio_channel(target, TOKEN) as channel:
        stub = inspection_pb2_grpc.InspectionServiceStub(channel)
        frames = [inspection_pb2.InspectRequest(line_id=line) for line in ("ok", "ok")]
        assert len([answer async for answer in stub.InspectStream(iter(frames))]) == 2
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in stub.InspectStream(
                iter([inspection_pb2.InspectRequest(line_id="crash")])
            ):
                pass
    await asyncio.sleep(0.3)  # the slow call's handler ends once its deadline cancelled it

    assert counted(reader) == {
        (INSPECT, "OK"): (2, 2),
        (INSPECT, "NOT_FOUND"): (1, 1),
        (INSPECT, "UNAUTHENTICATED"): (1, 1),
        (INSPECT, "DEADLINE_EXCEEDED"): (1, 1),
        (STREAM, "OK"): (1, 1),
        (STREAM, "UNKNOWN"): (1, 1),
    }
