"""Scale-out that reaches new instances: a client asked to balance round-robin spreads its calls
over every address its target resolves to (one connection, pick_first, is the default), and a
server with a connection age closes old connections, so the client connects again and would
resolve the name again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_rpc import Api, Balancing, Server, channel_options, open_aio_channel


class Peers(inspection_pb2_grpc.InspectionServiceServicer):
    """Answers Inspect with the server's name and the client connection's address."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def Inspect(  # noqa: N802 - the generated method name
        self, request: inspection_pb2.InspectRequest, context: Any
    ) -> inspection_pb2.InspectResponse:
        return inspection_pb2.InspectResponse(model_name=self.name, trace_id=context.peer())

    async def InspectStream(  # noqa: N802 - the generated method name
        self, requests: Any, context: Any
    ) -> AsyncIterator[inspection_pb2.InspectResponse]:
        async for _ in requests:
            yield inspection_pb2.InspectResponse(model_name=self.name)


async def started(name: str, **options: Any) -> Server:
    server = Server(
        [
            Api(
                "screwops.v1.InspectionService",
                inspection_pb2_grpc.add_InspectionServiceServicer_to_server,
                Peers(name),
            )
        ],
        host="127.0.0.1",
        port=0,
        **options,
    )
    await server.start()
    return server


@pytest.fixture
async def two() -> AsyncIterator[tuple[Server, Server]]:
    first, second = await started("first"), await started("second")
    yield first, second
    await first.stop(0)
    await second.stop(0)


async def inspect(channel: grpc.aio.Channel) -> inspection_pb2.InspectResponse:
    stub = inspection_pb2_grpc.InspectionServiceStub(channel)
    answer: inspection_pb2.InspectResponse = await stub.Inspect(
        inspection_pb2.InspectRequest(), timeout=5
    )
    return answer


def test_pick_first_leaves_the_options_as_they_are() -> None:
    assert channel_options([("grpc.lb_policy_name", "x")], "pick_first") == [
        ("grpc.lb_policy_name", "x")
    ]


def test_round_robin_is_asked_for_in_the_service_config() -> None:
    ((name, value),) = channel_options([], "round_robin")
    assert name == "grpc.service_config"
    assert json.loads(value) == {"loadBalancingConfig": [{"round_robin": {}}]}


@pytest.mark.parametrize(("balancing", "served_by"), [("pick_first", 1), ("round_robin", 2)])
async def test_round_robin_spreads_calls_over_every_address_and_pick_first_does_not(
    two: tuple[Server, Server], balancing: Balancing, served_by: int
) -> None:
    first, second = two
    target = f"ipv4:127.0.0.1:{first.port},127.0.0.1:{second.port}"
    async with open_aio_channel(target, balancing=balancing) as channel:
        answers = [await inspect(channel) for _ in range(10)]
    assert len({answer.model_name for answer in answers}) == served_by


async def test_a_connection_past_its_age_is_closed_and_the_next_call_connects_again() -> None:
    server = await started("aged", max_connection_age_s=0.2)
    try:
        async with open_aio_channel(f"127.0.0.1:{server.port}") as channel:
            before = await inspect(channel)
            await asyncio.sleep(1.0)
            after = await inspect(channel)
    finally:
        await server.stop(0)
    assert before.trace_id != after.trace_id, "the client's connection was not replaced"


async def test_without_an_age_the_connection_is_kept() -> None:
    server = await started("kept")
    try:
        async with open_aio_channel(f"127.0.0.1:{server.port}") as channel:
            before = await inspect(channel)
            await asyncio.sleep(1.0)
            after = await inspect(channel)
    finally:
        await server.stop(0)
    assert before.trace_id == after.trace_id
