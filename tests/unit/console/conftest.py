"""The console app in-process (FastAPI's TestClient) against the fake servicers."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from screwops_console.config import ConsoleSettings
from screwops_console.web import create_app
from starlette.exceptions import StarletteDeprecationWarning

from tests.unit.console.fakes import Fakes, populated, serving

with warnings.catch_warnings():
    # Starlette 1.x would rather its test client ran on httpx2; httpx (the dev group's) works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

Console = Callable[..., TestClient]


def settings_for(address: str, **overrides: Any) -> ConsoleSettings:
    """Settings with every service at ``address`` (one server hosts the four fakes)."""
    values: dict[str, Any] = {
        "gateway_address": address,
        "ingestion_address": address,
        "labeling_address": address,
        "registry_address": address,
        "gateway_token": "",
        "rpc_timeout_s": 5.0,
        **overrides,
    }
    return ConsoleSettings(**values)


@pytest.fixture
def fakes() -> Fakes:
    return populated()


@pytest.fixture
def address(fakes: Fakes) -> Iterator[str]:
    with serving(fakes) as where:
        yield where


@pytest.fixture
def make_console(fakes: Fakes, address: str) -> Iterator[Console]:
    """Start a console with settings overrides; every one started is stopped after the test."""
    clients: list[TestClient] = []

    def start(**overrides: Any) -> TestClient:
        settings = settings_for(overrides.pop("address", address), **overrides)
        app = create_app(settings, fakes.runs, fakes.reports, meter_provider=MeterProvider())
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def console(make_console: Console) -> TestClient:
    return make_console()
