"""What every command shares: addresses from the services' own settings, and exit codes."""

from __future__ import annotations

from importlib.metadata import version

import grpc
import pytest
import typer
from screwops_cli.common import ExitCode, exit_code, service_address

from tests.unit.cli.support import closed_port, screwops


def test_addresses_come_from_each_services_settings() -> None:
    assert service_address("registry") == "127.0.0.1:50054"
    assert service_address("gateway") == "127.0.0.1:50051"
    assert service_address("labeling") == "127.0.0.1:50053"
    assert service_address("ingestion") == "127.0.0.1:50052"


def test_the_services_variables_move_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREWOPS_REGISTRY_GRPC_PORT", "6000")
    monkeypatch.setenv("SCREWOPS_REGISTRY_GRPC_HOST", "registry.local")
    monkeypatch.setenv("SCREWOPS_GATEWAY_GRPC_HOST", "0.0.0.0")
    assert service_address("registry") == "registry.local:6000"
    assert service_address("gateway") == "127.0.0.1:50051"


def test_the_gateways_other_settings_do_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    # Production without tokens stops the gateway from starting, not the CLI from finding it.
    monkeypatch.setenv("SCREWOPS_ENVIRONMENT", "production")
    assert service_address("gateway") == "127.0.0.1:50051"


def test_a_service_that_is_not_installed_asks_for_an_address(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as raised:
        service_address("nosuchservice")
    assert raised.value.exit_code == ExitCode.USAGE
    assert "pass --address or set SCREWOPS_NOSUCHSERVICE_ADDRESS" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, ExitCode.USAGE),
        (grpc.StatusCode.UNAVAILABLE, ExitCode.UNREACHABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, ExitCode.UNREACHABLE),
        (grpc.StatusCode.NOT_FOUND, ExitCode.NOT_FOUND),
        (grpc.StatusCode.FAILED_PRECONDITION, ExitCode.REFUSED),
        (grpc.StatusCode.ALREADY_EXISTS, ExitCode.REFUSED),
        (grpc.StatusCode.UNAUTHENTICATED, ExitCode.DENIED),
        (grpc.StatusCode.PERMISSION_DENIED, ExitCode.DENIED),
        (grpc.StatusCode.INTERNAL, ExitCode.FAILED),
        (grpc.StatusCode.UNKNOWN, ExitCode.FAILED),
    ],
)
def test_each_status_has_its_exit_code(status: grpc.StatusCode, code: ExitCode) -> None:
    assert exit_code(status) == code


def test_the_existing_ingestion_commands_keep_exit_3_when_unreachable() -> None:
    result = screwops("datasets", "list", "--address", closed_port())
    assert result.exit_code == 3
    assert "ingestion: UNAVAILABLE" in result.stderr


def test_version_prints_the_installed_package_version() -> None:
    result = screwops("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"screwops {version('screwops-cli')}"
