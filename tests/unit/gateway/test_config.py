"""The gateway's settings (authentication, shared by every API, is in tests/unit/test_rpc_auth)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from screwops_gateway.config import GatewaySettings, LineLabels, LogPolicy, Policy

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


def test_the_rules_carry_every_limit_and_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MODEL_NAME": "bolt-classifier",
        "MAX_IMAGE_BYTES": "1000",
        "MIN_IMAGE_SIDE": "16",
        "MAX_IMAGE_SIDE": "2048",
        "TRITON_TIMEOUT_S": "1.5",
        "SWITCH_TIMEOUT_S": "30",
        "STATE_REFRESH_S": "2.5",
        "STREAM_WINDOW": "4",
        "LOG_QUEUE_SIZE": "50",
        "LOG_QUEUE_BYTES": "1024",
        "LOG_CONCURRENCY": "2",
        "IMAGE_SAMPLE_RATE": "0.5",
        "LOW_CONFIDENCE_BAND": "0.1",
        "INSPECTION_RETENTION_DAYS": "0",
        "METRIC_LINES": '["line-1", "line-2"]',
    }.items():
        monkeypatch.setenv(f"SCREWOPS_GATEWAY_{name}", value)

    assert GatewaySettings().rules() == Policy(
        model_name="bolt-classifier",
        max_image_bytes=1000,
        min_image_side=16,
        max_image_side=2048,
        triton_timeout_s=1.5,
        switch_timeout_s=30.0,
        state_refresh_s=2.5,
        stream_window=4,
        log=LogPolicy(
            queue_size=50,
            queue_bytes=1024,
            concurrency=2,
            image_sample_rate=0.5,
            low_confidence_band=0.1,
            image_retention_days=None,
        ),
        lines=LineLabels(known=("line-1", "line-2")),
    )
