"""The CLI's consoles print wide in tests, so table cells are not cut."""

from __future__ import annotations

import pytest
from screwops_cli import common


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 200)
    monkeypatch.setattr(common.errors, "width", 200)
