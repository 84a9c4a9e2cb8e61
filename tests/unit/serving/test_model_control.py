"""Triton's model-control API is closed to all but the holders of the stack's key: what
TritonModels sends, and how it reports a refusal, against a stand-in that refuses as Triton 2.51
does (``UNAVAILABLE: This protocol is restricted, expecting header '...'``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from screwops_contracts.models import MODEL_CONTROL_HEADER
from screwops_errors import PermissionDeniedError
from screwops_serving import TritonModels
from screwops_serving.client import MODEL_CONTROL_GRPC_HEADER
from tritonclient.grpc import service_pb2, service_pb2_grpc

KEY = "the-stack-model-control-key"


@dataclass
class RestrictedTriton(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Model control only with ``KEY`` under Triton's gRPC header; readiness for anyone."""

    controlled: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    async def _control(self, call: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.headers.append(metadata)
        if metadata.get(MODEL_CONTROL_GRPC_HEADER) != KEY:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"This protocol is restricted, expecting header '{MODEL_CONTROL_GRPC_HEADER}'",
            )
        self.controlled.append(call)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self._control(f"load {request.model_name}", context)
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self._control(f"unload {request.model_name}", context)
        return service_pb2.RepositoryModelUnloadResponse()

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self._control("index", context)
        entry = service_pb2.RepositoryIndexResponse.ModelIndex(
            name="m", version="1", state="UNAVAILABLE", reason="unloaded"
        )
        return service_pb2.RepositoryIndexResponse(models=[entry])

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.headers.append(dict(context.invocation_metadata() or ()))
        return service_pb2.ModelReadyResponse(ready=True)


@pytest.fixture
async def triton() -> AsyncIterator[tuple[RestrictedTriton, str]]:
    server = grpc.aio.server()
    servicer = RestrictedTriton()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


def test_the_grpc_header_is_tritons_prefix_on_the_stacks_header() -> None:
    assert f"triton-grpc-protocol-{MODEL_CONTROL_HEADER}" == MODEL_CONTROL_GRPC_HEADER


async def test_the_key_holder_loads_unloads_and_reads_the_index(
    triton: tuple[RestrictedTriton, str],
) -> None:
    servicer, url = triton
    async with TritonModels(url, model_control_key=KEY) as client:
        assert client.controls_models
        await client.load("m")
        assert await client.unloaded("m", 1)
        await client.unload("m")
        assert await client.ready("m", 1)
    assert servicer.controlled == ["load m", "index", "unload m"]
    # The key goes with model control only, never with readiness (or inference).
    assert [h.get(MODEL_CONTROL_GRPC_HEADER) for h in servicer.headers] == [KEY, KEY, KEY, None]


@pytest.mark.parametrize("key", [None, "a-key-that-is-not-the-stacks"])
async def test_anyone_else_is_refused_model_control_and_not_told_to_retry(
    triton: tuple[RestrictedTriton, str], key: str | None
) -> None:
    servicer, url = triton
    async with TritonModels(url, model_control_key=key) as client:
        for control in (client.load("m"), client.unload("m"), client.served()):
            with pytest.raises(PermissionDeniedError) as refused:
                await control
            assert MODEL_CONTROL_HEADER in refused.value.message
            assert KEY not in refused.value.message
            if key:
                assert key not in refused.value.message
        assert await client.ready("m", 1)
    assert servicer.controlled == []


async def test_a_client_without_the_key_does_not_ask_whether_a_version_was_unloaded(
    triton: tuple[RestrictedTriton, str],
) -> None:
    """The gateway holds no key: it waits for a version not ready as for one still loading."""
    servicer, url = triton
    async with TritonModels(url) as client:
        assert not client.controls_models
        assert not await client.unloaded("m", 1)
    assert servicer.headers == []
