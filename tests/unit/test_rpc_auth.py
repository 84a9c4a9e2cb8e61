"""Every gRPC API authenticates alike: the four services' settings demand a token table in
production, the clients' channels present a token on every kind of call, and the server checks it,
checks the principal's role against the method's, and serves the call as that principal."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FileDescriptor
from pydantic import SecretStr, ValidationError
from screwops.v1 import (
    ingestion_pb2,
    ingestion_pb2_grpc,
    inspection_pb2,
    inspection_pb2_grpc,
    labeling_pb2,
    registry_pb2,
    registry_pb2_grpc,
)
from screwops_gateway import grpc_api as gateway_api
from screwops_gateway.config import GatewaySettings
from screwops_ingestion import grpc_api as ingestion_api
from screwops_ingestion.config import IngestionSettings
from screwops_labeling import grpc_api as labeling_api
from screwops_labeling.config import LabelingSettings
from screwops_registry import grpc_api as registry_api
from screwops_registry.config import RegistrySettings
from screwops_rpc import (
    Api,
    Server,
    bearer_auth,
    current_principal,
    method_roles,
    open_aio_channel,
    open_channel,
)
from screwops_rpc.auth import INVALID, MISSING
from screwops_settings import ApiSettings, ApiToken, Role

from tests.support import use_production_credentials

TOKEN = "a-token-of-sufficient-length"
VIEWER_TOKEN = "a-viewer-token-of-sufficient-length"
TABLE = [
    ApiToken(principal="ops-alice", role=Role.OPERATOR, token=SecretStr(TOKEN)),
    ApiToken(principal="dash", role=Role.VIEWER, token=SecretStr(VIEWER_TOKEN)),
]
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
    table = [
        {"principal": "ops-alice", "role": "operator", "token": TOKEN},
        {"principal": "line-3", "role": "line", "token": f"{TOKEN}-2"},
    ]
    monkeypatch.setenv(f"{prefix}AUTH_TOKENS", json.dumps(table))

    loaded = settings()

    assert [(t.principal, t.role, t.token.get_secret_value()) for t in loaded.auth_tokens] == [
        ("ops-alice", Role.OPERATOR, TOKEN),
        ("line-3", Role.LINE, f"{TOKEN}-2"),
    ]
    assert TOKEN not in repr(loaded)


@pytest.mark.parametrize(("settings", "prefix"), APIS)
def test_short_tokens_are_refused_without_being_quoted(
    settings: type[ApiSettings], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = [{"principal": "ops-alice", "role": "operator", "token": "s3cret"}]
    monkeypatch.setenv(f"{prefix}AUTH_TOKENS", json.dumps(table))

    with pytest.raises(ValidationError) as error:
        settings()

    assert "at least 16 characters" in str(error.value)
    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize(("settings", "prefix"), APIS)
def test_a_bare_token_names_no_principal_and_is_refused_without_being_quoted(
    settings: type[ApiSettings], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{prefix}AUTH_TOKENS", json.dumps([TOKEN]))

    with pytest.raises(ValidationError) as error:
        settings()

    assert '{"principal": "<name>", "role":' in str(error.value)
    assert TOKEN not in str(error.value)


@pytest.mark.parametrize(
    "entry",
    [
        {"principal": "ops-alice", "role": "root", "token": TOKEN},
        {"principal": "ops alice", "role": "operator", "token": TOKEN},
        {"principal": "", "role": "operator", "token": TOKEN},
        {"role": "operator", "token": TOKEN},
    ],
)
def test_a_token_needs_a_known_role_and_a_plain_principal(
    entry: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCREWOPS_REGISTRY_AUTH_TOKENS", json.dumps([entry]))

    with pytest.raises(ValidationError) as error:
        RegistrySettings()

    assert TOKEN not in str(error.value)


def test_one_token_names_one_principal(monkeypatch: pytest.MonkeyPatch) -> None:
    table = [
        {"principal": "ops-alice", "role": "operator", "token": TOKEN},
        {"principal": "dash", "role": "viewer", "token": TOKEN},
    ]
    monkeypatch.setenv("SCREWOPS_REGISTRY_AUTH_TOKENS", json.dumps(table))

    with pytest.raises(ValidationError, match="share a token") as error:
        RegistrySettings()

    assert TOKEN not in str(error.value)


def test_each_role_allows_what_the_ones_before_it_allow() -> None:
    order = [Role.VIEWER, Role.LINE, Role.LABELER, Role.OPERATOR, Role.ADMIN]
    for rank, role in enumerate(order):
        assert [role.allows(needed) for needed in order] == [i <= rank for i in range(5)]


@pytest.mark.parametrize(
    ("roles", "proto", "service"),
    [
        (gateway_api.ROLES, inspection_pb2.DESCRIPTOR, "InspectionService"),
        (ingestion_api.ROLES, ingestion_pb2.DESCRIPTOR, "IngestionService"),
        (labeling_api.ROLES, labeling_pb2.DESCRIPTOR, "LabelingService"),
        (registry_api.ROLES, registry_pb2.DESCRIPTOR, "RegistryService"),
    ],
)
def test_every_method_of_every_api_has_a_role(
    roles: dict[str, Role], proto: FileDescriptor, service: str
) -> None:
    described = proto.services_by_name[service]
    assert set(roles) == {f"/{described.full_name}/{method.name}" for method in described.methods}


def test_the_apis_give_each_method_its_least_role() -> None:
    def named(roles: dict[str, Role]) -> dict[str, Role]:
        return {method.rsplit("/", 1)[1]: role for method, role in roles.items()}

    assert set(named(gateway_api.ROLES).values()) == {Role.LINE}
    assert named(registry_api.ROLES) == {
        "ListVersions": Role.VIEWER,
        "GetLineage": Role.VIEWER,
        "Promote": Role.OPERATOR,
        "Rollback": Role.OPERATOR,
        "SetAlias": Role.OPERATOR,
        "UnsetAlias": Role.OPERATOR,
        "ListAliases": Role.VIEWER,
        "Release": Role.OPERATOR,
        "Refuse": Role.OPERATOR,
        "GetRollout": Role.VIEWER,
        "StartRollout": Role.OPERATOR,
        "AdvanceRollout": Role.OPERATOR,
        "PauseRollout": Role.OPERATOR,
        "ResumeRollout": Role.OPERATOR,
        "AbortRollout": Role.OPERATOR,
    }
    assert named(ingestion_api.ROLES)["Import"] is Role.OPERATOR
    assert named(ingestion_api.ROLES)["Upload"] is Role.OPERATOR
    assert named(labeling_api.ROLES)["SubmitLabel"] is Role.LABELER
    assert named(labeling_api.ROLES)["CloseVersion"] is Role.OPERATOR


def test_no_tokens_means_no_interceptor() -> None:
    assert bearer_auth([], ROLES) == []
    assert len(bearer_auth(TABLE, ROLES)) == 1


def _caller() -> str:
    principal = current_principal()
    return "nobody" if principal is None else principal.name


class Echo(inspection_pb2_grpc.InspectionServiceServicer):
    """Answers whatever passed authentication, naming who called: unary and bidirectional calls."""

    async def Inspect(self, request: Any, context: Any) -> inspection_pb2.InspectResponse:  # noqa: N802
        return inspection_pb2.InspectResponse(request_id=f"{request.request_id} by {_caller()}")

    async def InspectStream(self, requests: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        async for request in requests:
            yield inspection_pb2.InspectResponse(request_id=f"{request.request_id} by {_caller()}")


class Uploads(ingestion_pb2_grpc.IngestionServiceServicer):
    """Answers a client stream, the third kind of call, naming who called."""

    async def Upload(self, requests: Any, context: Any) -> ingestion_pb2.ImportResult:  # noqa: N802
        accepted = len([r async for r in requests])
        return ingestion_pb2.ImportResult(accepted_count=accepted, dataset_id=_caller())


ROLES = {
    **method_roles(
        "screwops.v1.InspectionService", {"Inspect": Role.LINE, "InspectStream": Role.LINE}
    ),
    **method_roles("screwops.v1.IngestionService", {"Upload": Role.OPERATOR}),
    **method_roles("screwops.v1.RegistryService", {"ListVersions": Role.VIEWER}),
}


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
        interceptors=bearer_auth(TABLE, ROLES, refused.append),
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

    assert (answer.request_id, streamed.request_id) == ("r-1 by ops-alice",) * 2
    assert (uploaded.accepted_count, uploaded.dataset_id) == (2, "ops-alice")
    assert server.refused == []


async def test_a_role_below_the_methods_is_refused_naming_the_role_on_every_kind_of_call(
    server: Guarded,
) -> None:
    async with open_aio_channel(f"127.0.0.1:{server.port}", VIEWER_TOKEN) as channel:
        gateway = inspection_pb2_grpc.InspectionServiceStub(channel)
        ingestion = ingestion_pb2_grpc.IngestionServiceStub(channel)
        calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("Inspect needs the line role", lambda: gateway.Inspect(_inspect(), timeout=5)),
            (
                "InspectStream needs the line role",
                lambda: _first(gateway.InspectStream(iter([_inspect()]), timeout=5)),
            ),
            ("Upload needs the operator role", lambda: ingestion.Upload(_uploads(), timeout=5)),
        ]
        for needed, call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call()
            assert (failure.value.code(), failure.value.details()) == (
                grpc.StatusCode.PERMISSION_DENIED,
                f"{needed}; dash is viewer",
            )
    assert len(server.refused) == 3


async def test_a_method_the_table_leaves_out_is_refused_to_every_role(server: Guarded) -> None:
    async with open_aio_channel(f"127.0.0.1:{server.port}", TOKEN) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await registry.GetLineage(registry_pb2.GetLineageRequest(), timeout=5)

    assert failure.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert failure.value.details() == "GetLineage is given to no role"


async def test_no_token_appears_in_a_refusal_or_a_log(
    server: Guarded, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    details: list[str] = []
    async with open_aio_channel(f"127.0.0.1:{server.port}", VIEWER_TOKEN) as channel:
        for token in (VIEWER_TOKEN, f"{TOKEN}x"):
            stub = inspection_pb2_grpc.InspectionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.Inspect(
                    _inspect(), timeout=5, metadata=(("authorization", f"Bearer {token}"),)
                )
            details.append(str(failure.value.details()))
    async with open_aio_channel(f"127.0.0.1:{server.port}", TOKEN) as channel:
        await inspection_pb2_grpc.InspectionServiceStub(channel).Inspect(_inspect(), timeout=5)

    for secret in (TOKEN, VIEWER_TOKEN):
        assert secret not in caplog.text
        assert not any(secret in detail for detail in details)


def _inspect() -> inspection_pb2.InspectRequest:
    return inspection_pb2.InspectRequest(request_id="r-1")


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
