"""The gateway's settings: authentication is required in production, tokens never leak."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError
from screwops_gateway.config import GatewaySettings

TOKEN = "a-token-of-sufficient-length"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from the defaults, whatever the machine running the tests exports."""
    for name in list(os.environ):
        if name.startswith("SCREWOPS_"):
            monkeypatch.delenv(name)


def production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREWOPS_ENVIRONMENT", "production")
    monkeypatch.setenv("SCREWOPS_MINIO__ACCESS_KEY", "line-7-ops")
    monkeypatch.setenv("SCREWOPS_MINIO__SECRET_KEY", "kJ8#real-minio-secret")
    monkeypatch.setenv("SCREWOPS_MONGO__URI", "mongodb://ops:m0ngo-pass@mongo:27017/")


def test_development_defaults_are_open_and_documented() -> None:
    settings = GatewaySettings()

    assert (settings.grpc_port, settings.metrics_port) == (50051, 9107)
    assert settings.max_image_bytes == 8 * 1024 * 1024
    assert settings.auth_tokens == []


def test_production_refuses_to_start_without_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    production(monkeypatch)

    with pytest.raises(ValidationError, match="SCREWOPS_GATEWAY_AUTH_TOKENS"):
        GatewaySettings()


def test_require_auth_refuses_to_start_without_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREWOPS_GATEWAY_REQUIRE_AUTH", "true")

    with pytest.raises(ValidationError, match="authentication is required"):
        GatewaySettings()


def test_production_starts_with_tokens_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    production(monkeypatch)
    monkeypatch.setenv("SCREWOPS_GATEWAY_AUTH_TOKENS", f'["{TOKEN}", "{TOKEN}-2"]')

    settings = GatewaySettings()

    assert [t.get_secret_value() for t in settings.auth_tokens] == [TOKEN, f"{TOKEN}-2"]
    assert TOKEN not in repr(settings)


def test_short_tokens_are_refused_without_being_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREWOPS_GATEWAY_AUTH_TOKENS", '["s3cret"]')

    with pytest.raises(ValidationError) as error:
        GatewaySettings()

    assert "at least 16 characters" in str(error.value)
    assert "s3cret" not in str(error.value)
