"""Every gRPC API authenticates alike: the four services' settings demand tokens in production,
and the clients' channels present a token on every kind of call, which the server checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from pydantic import SecretStr, ValidationError
from screwops.v1 import (
    ingestion_pb2,
    ingestion_pb2_grpc,
    inspection_pb2,
    inspection_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from screwops_gateway.config import GatewaySettings
from screwops_ingestion.config import IngestionSettings
from screwops_labeling.config import LabelingSettings
from screwops_registry.config import RegistrySettings
from screwops_rpc import Api, Server, bearer_auth, open_aio_channel, open_channel
from screwops_rpc.auth import INVALID, MISSING
from screwops_settings import ApiSettings

from tests.support import use_production_credentials

TOKEN = "a-token-of-sufficient-length"
APIS: list[tuple[type[ApiSettings], str]] = [
    (GatewaySettings, "SCREWOPS_GATEWAY_"),
    (IngestionSettings, "SCREWOPS_INGESTION_"),
    (LabelingSettings, "SCREWOPS_LABELING_"),
    (RegistrySettings, "SCREWOPS_REGISTRY_"),
]


pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.mark.parametrize(("settings", "prefix"), APIS)
def test_development_is_open(settings: type[ApiSettings], prefix: str) -> None:
    assert settings().auth_tokens == []


@pytest.mark.parametrize(("settings", "prefix"), APIS)
def test_production_refuses_to_start_without_tokens_and_names_the_variable(
    settings: type[ApiSettings], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_production_credentials(monkeypatch)

    with pytest.raises(ValidationError, match=f"set {prefix}AUTH_TOKENS"):
        settings()


@pytest.mark.parametrize(("settings", "prefix"), APIS)
def test_require_auth_refuses_to_start_without_tokens(
    settings: type[ApiSettings], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{prefix}REQUIRE_AUTH", "true")

    with pytest.raises(ValidationError, match="authentication is required"):
        settings()


@pytest.mark.parametrize(("settings", "prefix"), APIS)
def test_production_starts_with_tokens_from_the_environment_and_hides_them(
    settings: type[ApiSettings], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_production_credentials(monkeypatch)
    monkeypatch.setenv(f"{prefix}AUTH_TOKENS", f'["{TOKEN}", "{TOKEN}-2"]')

    loaded = settings()

    assert [t.get_secret_value() for t in loaded.auth_tokens] == [TOKEN, f"{TOKEN}-2"]
    assert TOKEN not in repr(loaded)


@pytest.mark.parametrize(("settings", "prefix"), APIS)
def test_short_tokens_are_refused_without_being_quoted(
    settings: type[ApiSettings], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{prefix}AUTH_TOKENS", '["s3cret"]')

    with pytest.raises(ValidationError) as error:
        settings()

    assert "at least 16 characters" in str(error.value)
    assert "s3cret" not in str(error.value)


def test_no_tokens_means_no_interceptor() -> None:
    assert bearer_auth([]) == []
    assert len(bearer_auth([SecretStr(TOKEN)])) == 1


class Echo(inspection_pb2_grpc.InspectionServiceServicer):
    """Answers whatever passed authentication: unary and bidirectional calls."""

    async def Inspect(self, request: Any, context: Any) -> inspection_pb2.InspectResponse:  # noqa: N802
        return inspection_pb2.InspectResponse(request_id=request.request_id)

    async def InspectStream(self, requests: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        async for request in requests:
            yield inspection_pb2.InspectResponse(request_id=request.request_id)


class Uploads(ingestion_pb2_grpc.IngestionServiceServicer):
    """Answers a client stream, the third kind of call."""

    async def Upload(self, requests: Any, context: Any) -> ingestion_pb2.ImportResult:  # noqa: N802
        return ingestion_pb2.ImportResult(accepted_count=len([r async for r in requests]))


@dataclass
class Guarded:
    """A running server with bearer auth, and how long each call it refused took."""

    port: int
    refused: list[float]


@pytest.fixture
async def server() -> AsyncIterator[Guarded]:
    refused: list[float] = []
    # The generated base servicers answer UNIMPLEMENTED to every method (typed as abstract).
    unimplemented: Any = registry_pb2_grpc.RegistryServiceServicer
    uploads: Any = Uploads  # answers Upload only
    running = Server(
        [
            Api(
                "screwops.v1.InspectionService",
                inspection_pb2_grpc.add_InspectionServiceServicer_to_server,
                Echo(),
            ),
            Api(
                "screwops.v1.IngestionService",
                ingestion_pb2_grpc.add_IngestionServiceServicer_to_server,
                uploads(),
            ),
            Api(
                "screwops.v1.RegistryService",
                registry_pb2_grpc.add_RegistryServiceServicer_to_server,
                unimplemented(),
            ),
        ],
        host="127.0.0.1",
        port=0,
        interceptors=bearer_auth([SecretStr(TOKEN)], refused.append),
    )
    await running.start()
    yield Guarded(running.port, refused)
    await running.stop(grace=0)


async def _uploads() -> AsyncIterator[ingestion_pb2.UploadRequest]:
    yield ingestion_pb2.UploadRequest()
    yield ingestion_pb2.UploadRequest()


@pytest.mark.parametrize(
    ("token", "refusal"), [(None, MISSING), ("", MISSING), ("x" * 20, INVALID)]
)
async def test_an_aio_channel_without_the_token_is_refused_on_every_kind_of_call(
    server: Guarded, token: str | None, refusal: str
) -> None:
    async with open_aio_channel(f"127.0.0.1:{server.port}", token) as channel:
        gateway = inspection_pb2_grpc.InspectionServiceStub(channel)
        ingestion = ingestion_pb2_grpc.IngestionServiceStub(channel)
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: gateway.Inspect(inspection_pb2.InspectRequest(), timeout=5),
            lambda: _first(
                gateway.InspectStream(iter([inspection_pb2.InspectRequest()]), timeout=5)
            ),
            lambda: ingestion.Upload(_uploads(), timeout=5),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call()
            assert (failure.value.code(), failure.value.details()) == (
                grpc.StatusCode.UNAUTHENTICATED,
                refusal,
            )
    assert len(server.refused) == 3


async def _first(stream: Any) -> Any:
    return await anext(aiter(stream))


async def test_an_aio_channel_with_the_token_passes_on_every_kind_of_call(server: Guarded) -> None:
    async with open_aio_channel(f"127.0.0.1:{server.port}", TOKEN) as channel:
        gateway = inspection_pb2_grpc.InspectionServiceStub(channel)
        ingestion = ingestion_pb2_grpc.IngestionServiceStub(channel)
        request = inspection_pb2.InspectRequest(request_id="r-1")

        answer = await gateway.Inspect(request, timeout=5, metadata=(("x-line", "7"),))
        streamed = await _first(gateway.InspectStream(iter([request]), timeout=5))
        uploaded = await ingestion.Upload(_uploads(), timeout=5)

    assert (answer.request_id, streamed.request_id, uploaded.accepted_count) == ("r-1", "r-1", 2)
    assert server.refused == []


async def test_a_blocking_channel_presents_its_token_and_only_then_passes(
    server: Guarded,
) -> None:
    def call(token: str | None) -> grpc.StatusCode:
        with open_channel(f"127.0.0.1:{server.port}", token) as channel:
            registry = registry_pb2_grpc.RegistryServiceStub(channel)
            try:
                registry.ListVersions(registry_pb2.ListVersionsRequest(), timeout=5)
            except grpc.RpcError as error:
                return error.code()
        return grpc.StatusCode.OK

    # Blocking calls from a thread, so the server keeps running in this loop.
    without, wrong, right = [
        await asyncio.to_thread(call, token) for token in (None, "y" * 20, TOKEN)
    ]

    assert (without, wrong) == (grpc.StatusCode.UNAUTHENTICATED,) * 2
    # Past authentication: the base servicer answers that the method is not implemented.
    assert right is grpc.StatusCode.UNIMPLEMENTED
