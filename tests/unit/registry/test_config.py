"""The registry's settings (authentication, shared by every API, is in tests/unit/test_rpc_auth)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from screwops_registry.config import (
    Deployment,
    RegistrySettings,
    ReleasePolicy,
    RolloutPolicies,
    RolloutStrategy,
)

pytestmark = pytest.mark.usefixtures("clean_environment")


def test_the_rules_carry_every_placement_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in {
        "TRITON_REPOSITORY": str(tmp_path),
        "KEEP_VERSIONS": "5",
        "MAX_BATCH_SIZE": "16",
        "QUEUE_DELAY_US": "500",
        "LOAD_TIMEOUT_S": "90",
        "CHECK_TIMEOUT_S": "12.5",
        "RESTORE_INTERVAL_S": "2",
    }.items():
        monkeypatch.setenv(f"SCREWOPS_REGISTRY_{name}", value)

    assert RegistrySettings().rules() == Deployment(
        repository=tmp_path,
        keep_versions=5,
        max_batch_size=16,
        queue_delay_us=500,
        load_timeout_s=90.0,
        check_timeout_s=12.5,
        restore_interval_s=2.0,
    )


def test_the_release_policy_is_a_json_map_of_model_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SCREWOPS_REGISTRY_RELEASE_POLICY", '{"screw-classifier": "manual", "*": "auto"}'
    )

    policies = RegistrySettings().release_policies()

    assert policies.of("screw-classifier") is ReleasePolicy.MANUAL
    assert policies.of("bolt-classifier") is ReleasePolicy.AUTO
    assert RegistrySettings(release_policy={}).release_policies().of("x") is ReleasePolicy.AUTO


def test_an_unknown_release_policy_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREWOPS_REGISTRY_RELEASE_POLICY", '{"screw-classifier": "later"}')

    with pytest.raises(ValidationError):
        RegistrySettings()


def test_the_rollout_policy_is_a_json_map_of_model_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SCREWOPS_REGISTRY_ROLLOUT",
        '{"screw-classifier": {"strategy": "canary", "steps": [1, 10, 100], "lines": ["line-2"]},'
        ' "*": {"strategy": "shadow", "shadow_share": 50}}',
    )

    policies = RegistrySettings().rollout_policies()

    canary = policies.of("screw-classifier")
    assert (canary.strategy, canary.shares, canary.lines) == (
        RolloutStrategy.CANARY,
        (1.0, 10.0, 100.0),
        ("line-2",),
    )
    assert policies.of("bolt-classifier").shares == (50.0,)
    assert RegistrySettings().rollout_policies().of("x").strategy is RolloutStrategy.SHADOW
    assert RolloutPolicies().of("x").strategy is RolloutStrategy.IMMEDIATE


@pytest.mark.parametrize(
    "policy",
    [
        '{"strategy": "gradual"}',
        '{"strategy": "canary", "steps": []}',
        '{"strategy": "canary", "steps": [25, 5, 100]}',
        '{"strategy": "canary", "steps": [5, 120]}',
        '{"strategy": "shadow", "shadow_share": 0}',
        '{"strategy": "canary", "lines": [""]}',
        '{"strategy": "canary", "surprise": 1}',
    ],
)
def test_a_malformed_rollout_policy_is_refused(
    monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    monkeypatch.setenv("SCREWOPS_REGISTRY_ROLLOUT", f'{{"screw-classifier": {policy}}}')

    with pytest.raises(ValidationError):
        RegistrySettings()
