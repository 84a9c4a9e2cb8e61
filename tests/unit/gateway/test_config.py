"""The gateway's settings (authentication, shared by every API, is in tests/unit/test_rpc_auth)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from screwops_gateway.config import GatewaySettings

pytestmark = pytest.mark.usefixtures("clean_environment")


def test_development_defaults_are_open_and_documented() -> None:
    settings = GatewaySettings()

    assert (settings.grpc_port, settings.metrics_port) == (50051, 9107)
    assert settings.max_image_bytes == 8 * 1024 * 1024
    assert settings.auth_tokens == []


def test_an_image_side_range_that_admits_nothing_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCREWOPS_GATEWAY_MIN_IMAGE_SIDE", "512")
    monkeypatch.setenv("SCREWOPS_GATEWAY_MAX_IMAGE_SIDE", "256")

    with pytest.raises(ValidationError, match="min_image_side must not exceed max_image_side"):
        GatewaySettings()
