"""Mutual TLS on the gateway (``require_client_cert``): a real in-process grpc.aio server with the
unit session's CA. A client without a certificate of that CA is refused in the handshake; a
camera with one is answered, and its certificate's CN is recorded on its inspection.completed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_gateway.grpc_api import server
from screwops_rpc import open_aio_channel
from screwops_settings import GrpcTlsSettings
from screwops_stack import certificates

from tests.unit.gateway.fakes import Harness, harness, png

CAMERA = "line-3-cam-4"


@pytest.fixture
async def gateway(grpc_tls: GrpcTlsSettings) -> AsyncIterator[tuple[Harness, str]]:
    """The gateway requiring client certificates of the session's CA; yields its address."""
    h = harness()
    api = server(h.service, host="127.0.0.1", port=0, tls=grpc_tls, require_client_cert=True)
    await h.service.start()
    await api.start()
    try:
        yield h, f"127.0.0.1:{api.port}"
    finally:
        await api.stop(grace=1)
        await h.service.stop()


def camera(grpc_tls: GrpcTlsSettings, home: Path, out: Path) -> GrpcTlsSettings:
    """A client's settings with a certificate named :data:`CAMERA` of the CA under ``home``."""
    cert, key = certificates.issue_client_certificate(home, CAMERA, out, log=out / "openssl.log")
    return GrpcTlsSettings(ca_file=grpc_tls.ca_file, client_cert_file=cert, client_key_file=key)


async def inspect(address: str, tls: GrpcTlsSettings) -> inspection_pb2.InspectResponse:
    async with open_aio_channel(address, tls=tls) as channel:
        stub = inspection_pb2_grpc.InspectionServiceStub(channel)
        request = inspection_pb2.InspectRequest(image=png(), line_id="line-3", camera_id="cam-4")
        answer: inspection_pb2.InspectResponse = await stub.Inspect(request, timeout=5)
        return answer


async def test_a_client_without_a_certificate_is_refused(
    gateway: tuple[Harness, str], grpc_tls: GrpcTlsSettings
) -> None:
    h, address = gateway
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await inspect(address, GrpcTlsSettings(ca_file=grpc_tls.ca_file))
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert not h.triton.calls


async def test_a_certificate_of_another_ca_is_refused(
    gateway: tuple[Harness, str], grpc_tls: GrpcTlsSettings, tmp_path: Path
) -> None:
    h, address = gateway
    other = tmp_path / "other-home"
    certificates.ensure_ca(other, log=tmp_path / "openssl.log")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await inspect(address, camera(grpc_tls, other, tmp_path))
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert not h.triton.calls


async def test_a_cameras_certificate_name_is_recorded_on_its_inspection(
    gateway: tuple[Harness, str], grpc_tls: GrpcTlsSettings, tmp_path: Path
) -> None:
    h, address = gateway
    assert grpc_tls.ca_file is not None
    answer = await inspect(address, camera(grpc_tls, grpc_tls.ca_file.parent.parent, tmp_path))
    await h.service.stop()
    [event] = h.published
    assert str(event.event_id) == answer.inspection_id
    assert event.payload.client_identity == CAMERA
