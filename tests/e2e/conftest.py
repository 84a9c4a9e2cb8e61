"""End-to-end tests run the real services, supervised, on the real stack (``make up``).

The session starts the supervisor for the services the pipeline needs unless one is already
running (a developer's), and stops it afterwards only if it started it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from screwops_settings import StackSettings
from screwops_stack import processes, supervisor

REPO = Path(__file__).resolve().parents[2]
PIPELINE = ("ingestion", "labeling", "validation")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def stack(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "screwops_stack", *args], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, f"screwops-stack {args} failed:\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="session")
def services() -> Iterator[tuple[str, ...]]:
    """The data-plane services, running under the supervisor."""
    settings = StackSettings()
    started_here = processes.find(supervisor.pidfile(settings)) is None
    stack("services", "up", *PIPELINE)
    yield PIPELINE
    if started_here:
        stack("services", "down")
