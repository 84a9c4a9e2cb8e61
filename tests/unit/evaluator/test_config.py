"""The evaluator's rules: every setting the staging area and the service use reaches them."""

from __future__ import annotations

from pathlib import Path

import pytest
from screwops_evaluator.config import EvaluatorSettings, Gate, Rules, Staging

pytestmark = pytest.mark.usefixtures("clean_environment")


def test_the_rules_carry_the_staging_and_concurrency_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in {
        "TRITON_REPOSITORY": str(tmp_path),
        "STAGING_MODEL": "it-staging",
        "MAX_BATCH_SIZE": "16",
        "LOAD_TIMEOUT_S": "90",
        "CHECK_TIMEOUT_S": "12.5",
        "INFER_TIMEOUT_S": "20",
        "CONCURRENCY": "3",
    }.items():
        monkeypatch.setenv(f"SCREWOPS_EVALUATOR_{name}", value)
    assert EvaluatorSettings().rules() == Rules(
        Staging(
            repository=tmp_path,
            model="it-staging",
            max_batch_size=16,
            load_timeout_s=90,
            check_timeout_s=12.5,
            infer_timeout_s=20,
        ),
        gate=Gate(),
        concurrency=3,
    )
