"""Ingestion's settings (authentication, shared by every API, is in tests/unit/test_rpc_auth)."""

from __future__ import annotations

import pytest
from screwops_ingestion.config import IngestionSettings, Limits, Rules

pytestmark = pytest.mark.usefixtures("clean_environment")


def test_the_rules_carry_every_limit_and_import_root(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MAX_IMAGE_BYTES": "1000",
        "MAX_IMAGE_PIXELS": "4096",
        "UPLOAD_CONCURRENCY": "3",
        "IMPORT_ROOTS": '["/data", "/mnt/line"]',
        "MAX_CSV_BYTES": "2048",
    }.items():
        monkeypatch.setenv(f"SCREWOPS_INGESTION_{name}", value)

    assert IngestionSettings().rules() == Rules(
        limits=Limits(max_bytes=1000, max_pixels=4096, concurrency=3, max_csv_bytes=2048),
        import_roots=("/data", "/mnt/line"),
    )


def test_nothing_is_importable_by_default() -> None:
    assert IngestionSettings().rules().import_roots == ()
