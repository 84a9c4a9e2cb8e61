"""Fixtures the unit tests share."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Start a settings test from the defaults, whatever the machine running the tests exports
    (a module opts in with ``pytestmark = pytest.mark.usefixtures("clean_environment")``); the
    monkeypatch it returns sets the variables a test wants on top."""
    for name in [n for n in os.environ if n.startswith("SCREWOPS_")]:
        monkeypatch.delenv(name)
    return monkeypatch
