"""TLS on every gRPC API (screwops_rpc.tls) and the certificates the stack issues for it
(screwops_stack.certificates): servers listen with TLS only, clients trust the stack's CA by
default, and the files are the owner's alone."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError
from screwops.v1 import registry_pb2_grpc
from screwops_rpc import (
    Server,
    TlsSetupError,
    channel_credentials,
    open_aio_channel,
    server_credentials,
)
from screwops_settings import GrpcTlsSettings, StackSettings, grpc_certificate_files
from screwops_stack import certificates

from tests.support import GRPC_TLS_VARIABLES
from tests.unit.cli.support import screwops, serving


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """A server with health checking only, as the stack's settings (the session's) have it."""
    running = Server([], host="127.0.0.1", port=0)
    await running.start()
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.stop(0)


async def health(channel: grpc.aio.Channel) -> Any:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    return await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)


async def test_a_client_trusting_the_stacks_ca_is_answered(server: str) -> None:
    async with open_aio_channel(server) as channel:
        answer = await health(channel)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_plaintext_client_is_refused(server: str) -> None:
    async with grpc.aio.insecure_channel(server) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health(channel)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_client_trusting_another_ca_is_refused(server: str, tmp_path: Path) -> None:
    other = certificates.ensure_ca(tmp_path, log=tmp_path / "openssl.log")
    async with open_aio_channel(server, tls=GrpcTlsSettings(ca_file=other.cert)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health(channel)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_server_without_a_certificate_says_which_setting_names_one() -> None:
    with pytest.raises(TlsSetupError, match=r"SCREWOPS_GRPC__(CERT|KEY)_FILE"):
        server_credentials(GrpcTlsSettings())


def test_requiring_client_certificates_needs_a_ca(grpc_tls: GrpcTlsSettings) -> None:
    without_ca = grpc_tls.model_copy(update={"ca_file": None})
    assert server_credentials(without_ca) is not None
    with pytest.raises(TlsSetupError, match="SCREWOPS_GRPC__CA_FILE"):
        server_credentials(without_ca, require_client_cert=True)


def test_an_unreadable_client_key_is_named(grpc_tls: GrpcTlsSettings, tmp_path: Path) -> None:
    tls = GrpcTlsSettings(
        ca_file=grpc_tls.ca_file,
        client_cert_file=grpc_tls.cert_file,
        client_key_file=tmp_path / "missing.key",
    )
    with pytest.raises(TlsSetupError, match="client_key_file"):
        channel_credentials(tls)


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValidationError, match="go together"):
        GrpcTlsSettings(client_cert_file=Path("camera.crt"))


def test_the_settings_default_to_the_stack_homes_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in GRPC_TLS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert StackSettings(home=tmp_path).grpc == GrpcTlsSettings()
    cert, key = certificates.ensure_grpc_certificate(tmp_path, log=tmp_path / "openssl.log")
    tls = StackSettings(home=tmp_path).grpc
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (certificates.Ca(tmp_path).cert, cert, key)
    monkeypatch.setenv("SCREWOPS_GRPC__CA_FILE", "/etc/ssl/other.crt")
    assert StackSettings(home=tmp_path).grpc.ca_file == Path("/etc/ssl/other.crt")


def _text(cert: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_the_grpc_certificate_names_every_host_and_is_the_owners_only(tmp_path: Path) -> None:
    cert, key = certificates.ensure_grpc_certificate(tmp_path, log=tmp_path / "openssl.log")
    text = _text(cert)
    for host in ("localhost", "gateway", "registry", "labeling", "ingestion", "console"):
        assert f"DNS:{host}" in text
    assert "IP Address:127.0.0.1" in text
    assert "TLS Web Server Authentication" in text
    for path in (cert, key, certificates.Ca(tmp_path).key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_grpc_certificate_is_issued_once_by_the_existing_ca(tmp_path: Path) -> None:
    log = tmp_path / "openssl.log"
    ca = certificates.ensure_ca(tmp_path, log=log)
    before = ca.cert.read_bytes()
    cert, _ = certificates.ensure_grpc_certificate(tmp_path, log=log)
    issued = cert.read_bytes()
    assert certificates.ensure_grpc_certificate(tmp_path, log=log) == grpc_certificate_files(
        tmp_path
    )
    assert (ca.cert.read_bytes(), cert.read_bytes()) == (before, issued)
    subprocess.run(["openssl", "verify", "-CAfile", str(ca.cert), str(cert)], check=True)


def test_the_stack_issues_a_client_certificate_named_for_the_camera(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    certificates.ensure_ca(home, log=tmp_path / "openssl.log")
    result = screwops(
        "stack", "issue-client-cert", "line-3-cam-4", "--out", str(out),
        env={"SCREWOPS_HOME": str(home)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cert, key = out / "line-3-cam-4.crt", out / "line-3-cam-4.key"
    text = _text(cert)
    assert "CN = line-3-cam-4" in text
    assert "TLS Web Client Authentication" in text
    assert {stat.S_IMODE(p.stat().st_mode) for p in (cert, key)} == {0o600}


def test_a_client_name_that_is_no_cn_is_refused(tmp_path: Path) -> None:
    certificates.ensure_ca(tmp_path, log=tmp_path / "openssl.log")
    with pytest.raises(ValueError, match="client name"):
        certificates.issue_client_certificate(
            tmp_path, "cam/../x", tmp_path, log=tmp_path / "openssl.log"
        )


def test_the_clis_client_certificate_needs_its_key() -> None:
    result = screwops("--cert", "camera.crt", "models", "list", "--address", "127.0.0.1:1")
    assert result.exit_code == 2
    assert "--cert and --key go together" in result.output


def test_the_clis_ca_file_is_the_one_its_calls_trust(tmp_path: Path) -> None:
    other = certificates.ensure_ca(tmp_path, log=tmp_path / "openssl.log")
    # A registry that implements nothing: trusted, a call gets as far as UNIMPLEMENTED; with
    # another CA the handshake fails, and the registry counts as unreachable.
    add = registry_pb2_grpc.add_RegistryServiceServicer_to_server
    with serving(add, registry_pb2_grpc.RegistryServiceServicer()) as address:  # type: ignore[abstract]
        trusted = screwops("models", "list", "--address", address)
        distrusted = screwops("--ca-file", str(other.cert), "models", "list", "--address", address)
    assert (trusted.exit_code, distrusted.exit_code) == (1, 3), distrusted.output
    assert "UNIMPLEMENTED" in trusted.output
    assert StackSettings().grpc.ca_file != other.cert, "the option outlived its command"
