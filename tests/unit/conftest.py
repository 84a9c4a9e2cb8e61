"""Fixtures the unit tests share."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start a settings test from the defaults, whatever the machine running the tests exports
    (a module opts in with ``pytestmark = pytest.mark.usefixtures("clean_environment")``)."""
    for name in list(os.environ):
        if name.startswith("SCREWOPS_"):
            monkeypatch.delenv(name)
