"""Fuzzing the gateway: over 10,000 malformed requests, no crash, only documented statuses.

Most examples go straight to the servicer (with a fake context, on the core with a fake Triton),
which is fast enough to throw thousands at it: random bytes, truncated and bit-flipped images,
empty and oversized payloads, odd sizes, arbitrary ids and versions, deadlines already passing,
and a Triton that is down or a model that was never deployed. A smaller share goes through a real
in-process gRPC server with bearer authentication, with arbitrary tokens and requests on the wire.
Every answer must be OK or one of the statuses the proto documents; INTERNAL (an unexpected
exception) or any exception escaping the servicer fails the test.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, cast

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import SecretStr
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_gateway.config import LogPolicy
from screwops_gateway.grpc_api import ROLES, Context, InspectionApi, server
from screwops_rpc import BearerAuth, open_aio_channel
from screwops_settings import ApiToken, Role

from tests.fakes import AbortedError, FakeContext
from tests.unit.gateway.fakes import POLICY, harness

DOCUMENTED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
LIMIT = 20_000
FUZZ_POLICY = replace(POLICY, max_image_bytes=LIMIT)
TOKEN = "fuzzing-token-0123456789abcdef"
SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def encoded(width: int, height: int, fmt: str, seed: int) -> bytes:
    pixels = Image.effect_noise((width, height), 40 + seed % 50).convert("L")
    out = io.BytesIO()
    pixels.save(out, format=fmt)
    return out.getvalue()


SEEDS = [encoded(64, 64, "PNG", 1), encoded(48, 80, "JPEG", 2), encoded(40, 40, "BMP", 3)]


@dataclass
class Worlds:
    """The servicer in each state the gateway can be in."""

    normal: InspectionApi
    undeployed: InspectionApi
    triton_down: InspectionApi

    def pick(self, name: str) -> InspectionApi:
        api: InspectionApi = getattr(self, name)
        return api


async def world(*, production: int | None = 1, triton_down: bool = False) -> InspectionApi:
    h = harness(
        production=production,
        policy=FUZZ_POLICY,
        log_policy=LogPolicy(queue_size=50, queue_bytes=1_000_000),
    )
    h.triton.down = triton_down
    await h.service.refresh()
    return InspectionApi(h.service)


@pytest.fixture(scope="module")
async def worlds() -> Worlds:
    return Worlds(
        normal=await world(),
        undeployed=await world(production=None),
        triton_down=await world(triton_down=True),
    )


async def status(
    api: InspectionApi, request: inspection_pb2.InspectRequest, remaining: float | None
) -> grpc.StatusCode:
    context = cast(Context, FakeContext(remaining))
    try:
        await api.Inspect(request, context)
    except AbortedError as aborted:
        code, details = aborted.code, aborted.details
    else:
        return grpc.StatusCode.OK
    assert details, "every refusal says why"
    return code


ids = st.one_of(
    st.sampled_from(["line-1", "cam-a", "L.2:x_y-z"]),
    st.text(max_size=80),
    st.just(""),
)
versions = st.one_of(
    st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from([1, 2, 3])
)
remaining = st.one_of(st.none(), st.just(5.0), st.floats(min_value=0.0, max_value=0.002))
worlds_names = st.sampled_from(["normal", "normal", "undeployed", "triton_down"])


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A real image, truncated, bit-flipped or both."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    if draw(st.booleans()):
        data = data[: draw(st.integers(min_value=0, max_value=len(data)))]
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        if data:
            index = draw(st.integers(min_value=0, max_value=len(data) - 1))
            data[index] = draw(st.integers(min_value=0, max_value=255))
    return bytes(data)


@st.composite
def odd_sizes(draw: st.DrawFn) -> bytes:
    """A valid image of any size from 1x1 up, in any supported format."""
    width = draw(st.integers(min_value=1, max_value=120))
    height = draw(st.integers(min_value=1, max_value=120))
    return encoded(width, height, draw(st.sampled_from(["PNG", "JPEG", "BMP", "TIFF"])), width)


payloads = {
    "random bytes": st.binary(max_size=4096),
    "damaged images": damaged(),
    "empty or oversized": st.one_of(
        st.just(b""),
        st.integers(min_value=LIMIT + 1, max_value=2 * LIMIT).map(
            lambda n: b"\x89PNG" * (n // 4 + 1)
        ),
    ),
    "odd sizes": odd_sizes(),
}
EXAMPLES = {
    "random bytes": 3000,
    "damaged images": 3000,
    "empty or oversized": 1000,
    "odd sizes": 1500,
}


def requests(image: st.SearchStrategy[bytes]) -> st.SearchStrategy[inspection_pb2.InspectRequest]:
    def build(
        image: bytes, line: str, camera: str, request_id: str, frame: str, version: int | None
    ) -> inspection_pb2.InspectRequest:
        request = inspection_pb2.InspectRequest(
            image=image, line_id=line, camera_id=camera, request_id=request_id, frame_id=frame
        )
        if version is not None:
            request.model_version = version
        return request

    return st.builds(build, image, ids, ids, st.text(max_size=140), st.text(max_size=140), versions)


def fuzz_payload(name: str) -> Any:
    @settings(SETTINGS, max_examples=EXAMPLES[name])
    @given(request=requests(payloads[name]), left=remaining, where=worlds_names)
    async def fuzz(
        worlds: Worlds, request: inspection_pb2.InspectRequest, left: float | None, where: str
    ) -> None:
        code = await status(worlds.pick(where), request, left)
        assert code in DOCUMENTED, f"{code} for {request!r:.200}"

    return fuzz


test_fuzz_random_bytes = fuzz_payload("random bytes")
test_fuzz_damaged_images = fuzz_payload("damaged images")
test_fuzz_empty_or_oversized = fuzz_payload("empty or oversized")
test_fuzz_odd_sizes = fuzz_payload("odd sizes")


@settings(SETTINGS, max_examples=1500)
@given(
    request=requests(st.one_of(st.sampled_from(SEEDS), st.binary(max_size=256))),
    left=remaining,
    where=worlds_names,
)
async def test_fuzz_fields_and_versions(
    worlds: Worlds, request: inspection_pb2.InspectRequest, left: float | None, where: str
) -> None:
    code = await status(worlds.pick(where), request, left)
    assert code in DOCUMENTED


@pytest.fixture(scope="module")
async def wire() -> AsyncIterator[inspection_pb2_grpc.InspectionServiceAsyncStub]:
    h = harness(policy=FUZZ_POLICY, log_policy=LogPolicy(queue_size=50))
    api = server(
        h.service,
        host="127.0.0.1",
        port=0,
        interceptors=[
            BearerAuth(
                [ApiToken(principal="fuzzer", role=Role.LINE, token=SecretStr(TOKEN))],
                ROLES,
                h.metrics.refused,
            )
        ],
        max_message_bytes=4 * LIMIT,
    )
    await h.service.start()
    await api.start()
    channel = open_aio_channel(f"127.0.0.1:{api.port}")
    try:
        yield inspection_pb2_grpc.InspectionServiceStub(channel)
    finally:
        await channel.close()
        await api.stop(grace=1)
        await h.service.stop()


printable = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
tokens = st.one_of(
    st.just(TOKEN), printable, printable.map(lambda t: f"Bearer {t}"), st.just(f"Bearer {TOKEN}")
)


@settings(SETTINGS, max_examples=500)
@given(
    request=requests(st.one_of(st.sampled_from(SEEDS), damaged(), st.binary(max_size=512))),
    token=st.one_of(st.none(), tokens),
)
async def test_fuzz_over_the_wire_with_tokens(
    wire: inspection_pb2_grpc.InspectionServiceAsyncStub,
    request: inspection_pb2.InspectRequest,
    token: str | None,
) -> None:
    metadata = () if token is None else (("authorization", token),)
    try:
        await wire.Inspect(request, timeout=5, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        code = error.code()
        if token != f"Bearer {TOKEN}":
            assert code == grpc.StatusCode.UNAUTHENTICATED
    else:
        code = grpc.StatusCode.OK
        assert token == f"Bearer {TOKEN}"
    assert code in DOCUMENTED
