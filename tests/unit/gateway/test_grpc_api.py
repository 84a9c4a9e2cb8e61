"""The servicer behind a real in-process grpc.aio server (port 0) on the core with a fake Triton:
proto fields, statuses, deadlines, authentication, health, reflection and streams."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sized
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from pydantic import SecretStr
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_gateway.grpc_api import ROLES, SERVICE_NAME, server
from screwops_gateway.service import NO_MODEL_DEPLOYED
from screwops_rpc import open_aio_channel
from screwops_rpc.auth import INVALID, MISSING, BearerAuth
from screwops_settings import ApiToken, Role

from tests.support import eventually
from tests.unit.gateway.fakes import MODEL, POLICY, Harness, harness, png

TOKEN = "line-3-camera-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@dataclass
class Running:
    h: Harness
    stub: inspection_pb2_grpc.InspectionServiceAsyncStub
    channel: grpc.aio.Channel


@asynccontextmanager
async def serving(
    h: Harness, *, max_concurrent_rpcs: int | None = None, max_concurrent_streams: int | None = None
) -> AsyncIterator[Running]:
    """The gateway's server as __main__ builds it, with bearer auth, on a free port."""
    api = server(
        h.service,
        host="127.0.0.1",
        port=0,
        interceptors=[
            BearerAuth(
                [ApiToken(principal="line-3", role=Role.LINE, token=SecretStr(TOKEN))],
                ROLES,
                h.metrics.refused,
            )
        ],
        max_message_bytes=4 * POLICY.max_image_bytes,
        max_concurrent_rpcs=max_concurrent_rpcs,
        max_concurrent_streams=max_concurrent_streams,
    )
    await h.service.start()
    await api.start()
    channel = open_aio_channel(f"127.0.0.1:{api.port}")
    try:
        yield Running(h, inspection_pb2_grpc.InspectionServiceStub(channel), channel)
    finally:
        await channel.close()
        await api.stop(grace=1)
        await h.service.stop()


@pytest.fixture
async def gateway() -> AsyncIterator[Running]:
    async with serving(harness(policy=replace(POLICY, stream_window=4))) as running:
        yield running


def request(**fields: object) -> inspection_pb2.InspectRequest:
    values: dict[str, object] = {"image": png(), "line_id": "line-3", "camera_id": "cam-a"}
    values.update(fields)
    return inspection_pb2.InspectRequest(**values)  # type: ignore[arg-type]


async def status_of(gateway: Running, message: inspection_pb2.InspectRequest) -> tuple[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.stub.Inspect(message, timeout=5, metadata=AUTH)
    return error.value.code().name, error.value.details() or ""


async def test_an_inspection_answers_every_field(gateway: Running) -> None:
    response = await gateway.stub.Inspect(
        request(request_id="req-9", frame_id="f-1"), timeout=5, metadata=AUTH
    )

    assert response.verdict == inspection_pb2.VERDICT_GOOD
    assert response.defect_probability == pytest.approx(0.2)
    assert (response.threshold, response.model_name, response.model_version) == (0.5, MODEL, 1)
    assert (response.request_id, response.frame_id) == ("req-9", "f-1")
    assert response.timings.total_ms > 0
    assert len(response.inspection_id) == 36


async def test_a_pinned_version_answers(gateway: Running) -> None:
    response = await gateway.stub.Inspect(request(model_version=2), timeout=5, metadata=AUTH)

    assert (response.verdict, response.model_version) == (inspection_pb2.VERDICT_DEFECT, 2)


async def test_each_error_becomes_its_status_with_its_reason(gateway: Running) -> None:
    assert await status_of(gateway, request(image=b"")) == (
        "INVALID_ARGUMENT",
        "empty image: 0 bytes",
    )
    code, details = await status_of(gateway, request(image=png(64, shade=3)[:70]))
    assert (code, details.startswith("corrupt or truncated PNG image")) == (
        "INVALID_ARGUMENT",
        True,
    )
    assert await status_of(gateway, request(image=bytes(100_001))) == (
        "INVALID_ARGUMENT",
        "image is 100001 bytes, over the limit of 100000",
    )
    assert await status_of(gateway, request(line_id="")) == (
        "INVALID_ARGUMENT",
        "line_id is required",
    )
    assert await status_of(gateway, request(model_version=9)) == (
        "NOT_FOUND",
        f"model_version 9 of {MODEL} is not loaded",
    )


def encoded(frames: list[Image.Image], fmt: str) -> bytes:
    out = io.BytesIO()
    frames[0].save(out, format=fmt, save_all=True, append_images=frames[1:])
    return out.getvalue()


async def test_an_image_that_is_not_one_gray_frame_is_invalid_with_its_reason(
    gateway: Running,
) -> None:
    animated = encoded([Image.new("L", (64, 64), shade) for shade in (0, 255)], "PNG")
    assert await status_of(gateway, request(image=animated)) == (
        "INVALID_ARGUMENT",
        "image has 2 frames; one is expected (a camera frame is one image)",
    )
    floating = encoded([Image.new("F", (64, 64), 0.5)], "TIFF")
    assert await status_of(gateway, request(image=floating)) == (
        "INVALID_ARGUMENT",
        "float images are not supported: send 8- or 16-bit",
    )


async def test_nothing_deployed_yet_is_a_failed_precondition() -> None:
    async with serving(harness(production=None)) as fresh:
        assert await status_of(fresh, request()) == ("FAILED_PRECONDITION", NO_MODEL_DEPLOYED)


async def test_a_bad_image_is_invalid_even_when_no_model_could_answer_it() -> None:
    async with serving(harness(production=None)) as fresh:
        code, _ = await status_of(fresh, request(image=b"not an image at all"))
        assert code == "INVALID_ARGUMENT"


async def _at_least(calls: Sized, count: int) -> bool | None:
    return True if len(calls) >= count else None


async def answer(running: Running) -> inspection_pb2.InspectResponse:
    response: inspection_pb2.InspectResponse = await running.stub.Inspect(
        request(), timeout=5, metadata=AUTH
    )
    return response


async def test_calls_past_maximum_concurrent_rpcs_are_resource_exhausted() -> None:
    async with serving(harness(), max_concurrent_rpcs=2) as running:
        running.h.triton.gate = asyncio.Event()  # Triton holds every call
        held = [asyncio.create_task(answer(running)) for _ in range(2)]
        await eventually(
            lambda: _at_least(running.h.triton.calls, 2), within=5, what="two calls in Triton"
        )

        code, _ = await status_of(running, request())

        running.h.triton.gate.set()
        assert code == "RESOURCE_EXHAUSTED"
        assert all(answer.verdict for answer in await asyncio.gather(*held))


async def test_a_connection_opens_no_more_streams_than_max_concurrent_streams() -> None:
    async with serving(harness(), max_concurrent_streams=1) as running:
        running.h.triton.gate = asyncio.Event()
        first = asyncio.create_task(answer(running))
        second = asyncio.create_task(answer(running))
        await asyncio.sleep(0.5)

        reached = len(running.h.triton.calls)
        running.h.triton.gate.set()
        await asyncio.gather(first, second)

        assert reached == 1  # the second call waited in the client for the first's stream
        assert len(running.h.triton.calls) == 2


async def test_triton_down_is_unavailable(gateway: Running) -> None:
    gateway.h.triton.down = True

    code, details = await status_of(gateway, request())

    assert code == "UNAVAILABLE"
    assert "failed to connect" in details


async def test_the_clients_deadline_is_honoured(gateway: Running) -> None:
    gateway.h.triton.delay_s = 10

    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.stub.Inspect(request(), timeout=0.3, metadata=AUTH)

    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert loop.time() - began < 1.0
    [call] = gateway.h.triton.calls
    assert call[3] <= 0.3


@pytest.mark.parametrize(
    ("metadata", "details"),
    [
        ((), MISSING),
        ((("authorization", "Basic dXNlcjpwYXNz"),), MISSING),
        ((("authorization", "Bearer nope"),), INVALID),
        ((("authorization", f"Bearer {TOKEN}x"),), INVALID),
    ],
)
async def test_calls_without_a_valid_token_are_unauthenticated(
    gateway: Running, metadata: tuple[tuple[str, str], ...], details: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await gateway.stub.Inspect(request(), timeout=5, metadata=metadata)
    stream = gateway.stub.InspectStream(iter([request()]), timeout=5, metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as streaming:
        await anext(aiter(stream))

    for error in (unary.value, streaming.value):
        assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, details)
    assert gateway.h.triton.calls == []
    assert gateway.h.metrics.statuses.count("UNAUTHENTICATED") == 2


async def test_the_token_scheme_is_case_insensitive(gateway: Running) -> None:
    response = await gateway.stub.Inspect(
        request(), timeout=5, metadata=(("authorization", f"bearer {TOKEN}"),)
    )
    assert response.model_version == 1


async def test_health_and_reflection_need_no_token(gateway: Running) -> None:
    health: Any = health_pb2_grpc.HealthStub(gateway.channel)  # its stubs omit the methods
    answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING

    channel: Any = gateway.channel  # the reflection stubs are typed for sync channels only
    reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    async for response in responses:
        names = {s.name for s in response.list_services_response.service}
        assert SERVICE_NAME in names
        break


async def test_a_stream_answers_every_frame_in_order(gateway: Running) -> None:
    gateway.h.triton.delays = {1: 0.05, 2: 0.0}  # odd frames overtake even ones inside Triton
    frames = [request(frame_id=str(i), model_version=1 + i % 2) for i in range(12)]

    call = gateway.stub.InspectStream(iter(frames), timeout=10, metadata=AUTH)
    answered = [r async for r in call]

    assert [r.frame_id for r in answered] == [str(i) for i in range(12)]
    assert [r.model_version for r in answered] == [1 + i % 2 for i in range(12)]


async def test_a_camera_may_wait_for_each_answer_before_sending_the_next(gateway: Running) -> None:
    call = gateway.stub.InspectStream(timeout=10, metadata=AUTH)
    for i in range(5):
        await call.write(request(frame_id=f"f{i}"))
        response = await call.read()
        assert isinstance(response, inspection_pb2.InspectResponse)
        assert response.frame_id == f"f{i}"
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF


async def test_a_failing_frame_ends_the_stream_naming_it(gateway: Running) -> None:
    frames = [request(frame_id="ok-1"), request(frame_id="bad", image=b"junk"), request()]

    call = gateway.stub.InspectStream(iter(frames), timeout=10, metadata=AUTH)
    first = await call.read()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call.read()

    assert isinstance(first, inspection_pb2.InspectResponse)
    assert first.frame_id == "ok-1"
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == (
        "frame 'bad': not an image: the bytes match no known image format"
    )
