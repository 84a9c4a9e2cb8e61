"""The table of services (``screwops_settings.services``) is what the supervisor, the CLI and the
deployment files trust for a service's ports; each service's own settings must say the same, and
an operator's variables must move a port for the table's readers as they do for the service."""

from __future__ import annotations

import importlib

import pytest
from screwops_settings import ServiceSettings
from screwops_settings.services import CONSOLE, REGISTRY, SERVICES, TRAINER, Service, service
from screwops_stack.supervisor import available


def settings_class(entry: Service) -> type[ServiceSettings]:
    config = importlib.import_module(f"{entry.module}.config")
    return next(
        value
        for value in vars(config).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value.__module__ == config.__name__
    )


@pytest.mark.parametrize("entry", SERVICES, ids=lambda s: s.name)
def test_each_services_settings_agree_with_its_entry(entry: Service) -> None:
    settings = settings_class(entry)
    assert settings.model_config.get("env_prefix") == entry.env_prefix
    fields = settings.model_fields
    assert fields["service_name"].default == entry.name
    for port in ("metrics_port", "grpc_port", "http_port"):
        default = fields[port].default if port in fields else None
        assert default == getattr(entry, port), port


def test_a_services_variables_move_its_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREWOPS_REGISTRY_GRPC_PORT", "6000")
    monkeypatch.setenv("SCREWOPS_CONSOLE_HTTP_PORT", "8181")
    monkeypatch.setenv("SCREWOPS_TRAINER_METRICS_PORT", "9500")
    assert REGISTRY.configured().grpc_port == 6000
    assert CONSOLE.configured().http_port == 8181
    assert TRAINER.configured().metrics_port == 9500
    assert {spec.name: spec.ports for spec in available(["registry", "console"])} == {
        "registry": {REGISTRY.metrics_port, 6000},
        "console": {CONSOLE.metrics_port, 8181},
    }


def test_a_port_the_service_lacks_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREWOPS_TRAINER_GRPC_PORT", "6000")
    assert TRAINER.configured() == TRAINER


def test_an_unknown_service_is_named_in_the_error() -> None:
    with pytest.raises(KeyError, match="no service 'sorter'"):
        service("sorter")
