"""Labeling's settings (authentication, shared by every API, is in tests/unit/test_rpc_auth)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from screwops_labeling.config import LabelingSettings, ReviewPolicy, Rules

pytestmark = pytest.mark.usefixtures("clean_environment")


def test_the_rules_carry_the_reservation_and_the_review_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "RESERVATION_SECONDS": "90",
        "REVIEW_BAND": "0.2",
        "REVIEW_SAMPLE_RATE": "0.05",
        "REVIEW_DATASET_ID": "bolts",
        "REVIEW_RETENTION_DAYS": "7",
    }.items():
        monkeypatch.setenv(f"SCREWOPS_LABELING_{name}", value)

    assert LabelingSettings().rules() == Rules(
        reservation=timedelta(seconds=90),
        review=ReviewPolicy(
            band=0.2, sample_rate=0.05, dataset_id="bolts", retention=timedelta(days=7)
        ),
    )


def test_a_retention_of_zero_days_keeps_review_items_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCREWOPS_LABELING_REVIEW_RETENTION_DAYS", "0")

    assert LabelingSettings().rules().review.retention is None
