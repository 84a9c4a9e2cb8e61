"""Chaos scenarios break a server or a service of the running pipeline on purpose and check
what the system does about it: real servers (``make up``), real services under the supervisor.

They reuse the end-to-end fixtures (the supervised services, a finished pipeline run) and run
after every other test, since they take servers away from under the whole stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from screwops_settings import StackSettings
from screwops_stack import processes, supervisor
from screwops_stack.servers import Layout

from tests.e2e.conftest import REPO, services

__all__ = ["crash_server", "crash_service", "restart_server", "services"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    chaos = [item for item in items if "tests/chaos/" in str(item.fspath)]
    for item in chaos:
        item.add_marker(pytest.mark.chaos)
        items.remove(item)
    items.extend(chaos)


def crash_server(settings: StackSettings, name: str) -> float:
    """SIGKILL the stack server ``name`` and its process group (a machine losing it, no clean
    shutdown); the time it died on the ``time.monotonic()`` clock."""
    process = processes.find(Layout(settings.home).pidfile(name))
    assert process is not None, f"{name} is not running"
    os.killpg(os.getpgid(process.pid), signal.SIGKILL)
    process.wait(timeout=30)
    return time.monotonic()


def crash_service(settings: StackSettings, name: str) -> int:
    """SIGKILL the supervised service ``name`` (``python -m screwops_<name>``); its pid. The
    supervisor starts it again after its backoff."""
    keeper = processes.find(supervisor.pidfile(settings))
    assert keeper is not None, "the supervisor is not running"
    [child] = [p for p in keeper.children() if f"screwops_{name}" in " ".join(p.cmdline()[1:3])]
    child.kill()
    child.wait(timeout=30)
    return int(child.pid)


def restart_server(name: str) -> None:
    """``screwops-stack up <name>``: returns once the server answers again."""
    result = subprocess.run(
        [sys.executable, "-m", "screwops_stack", "up", name],
        cwd=Path(REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"restarting {name} failed:\n{result.stdout}{result.stderr}"
