"""Validation's rules: the thresholds the report records, and the concurrency beside them."""

from __future__ import annotations

import pytest
from screwops_validation.config import Rules, Thresholds, ValidationSettings

pytestmark = pytest.mark.usefixtures("clean_environment")


def test_the_rules_carry_the_thresholds_and_the_concurrency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCREWOPS_VALIDATION_MIN_PER_CLASS", "7")
    monkeypatch.setenv("SCREWOPS_VALIDATION_CONCURRENCY", "3")
    rules = ValidationSettings().rules()
    assert rules == Rules(Thresholds(min_per_class=7), concurrency=3)
    # A plain Thresholds, so the report records the thresholds and never the connections.
    assert type(rules.thresholds) is Thresholds
