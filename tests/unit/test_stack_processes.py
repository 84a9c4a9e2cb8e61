"""The stack recognises its servers by their pid files: across the machine's clock adjustments, and
never a process that merely reuses a recorded pid."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from screwops_settings import StackSettings
from screwops_stack import processes
from screwops_stack.supervisor import IMPORT_ROOTS, service_env


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[Path]:
    """A server started as the stack starts one; its pid file."""
    pidfile = tmp_path / "run" / "sleeper.pid"
    process = processes.start(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        pidfile=pidfile,
        logfile=tmp_path / "logs" / "sleeper.log",
        env=dict(os.environ),
        cwd=tmp_path,
    )
    yield pidfile
    process.kill()
    process.wait(timeout=10)


def _rewrite(pidfile: Path, **fields: object) -> dict[str, object]:
    record: dict[str, object] = json.loads(pidfile.read_text())
    record.update(fields)
    pidfile.write_text(json.dumps(record))
    return record


def test_a_server_is_still_found_after_the_clock_moves_the_boot_time_a_second(
    sleeper: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = json.loads(sleeper.read_text())["pid"]
    before = psutil.Process(pid).create_time()
    booted = psutil.boot_time()
    # What Linux reports after an NTP slew carried its whole-second boot time over a boundary.
    monkeypatch.setattr("psutil._psplatform.boot_time", lambda: booted + 1.0)
    assert psutil.Process(pid).create_time() == pytest.approx(before + 1.0)

    found = processes.find(sleeper)

    assert found is not None
    assert found.pid == pid


def test_a_recorded_pid_whose_process_started_at_another_time_is_not_the_server(
    sleeper: Path,
) -> None:
    record = json.loads(sleeper.read_text())
    _rewrite(sleeper, since_boot=record["since_boot"] - 60)

    assert processes.find(sleeper) is None
    assert processes.stop(sleeper, timeout=1) is False
    assert psutil.pid_exists(record["pid"]), "a process that is not the server is never signalled"


def test_a_pid_file_written_with_a_wall_clock_start_still_finds_its_server(sleeper: Path) -> None:
    record = json.loads(sleeper.read_text())
    del record["since_boot"]
    record["create_time"] = psutil.Process(record["pid"]).create_time()
    sleeper.write_text(json.dumps(record))

    found = processes.find(sleeper)

    assert found is not None
    assert found.pid == record["pid"]


def test_the_local_stack_names_ingestions_import_roots_unless_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ingestion imports nothing by default; the demo and the tests import from these."""
    settings = StackSettings(home=tmp_path)
    monkeypatch.delenv(IMPORT_ROOTS, raising=False)
    roots = json.loads(service_env(settings)[IMPORT_ROOTS])
    assert roots == [str(Path.home()), tempfile.gettempdir(), str(tmp_path)]

    monkeypatch.setenv(IMPORT_ROOTS, '["/data"]')
    assert service_env(settings)[IMPORT_ROOTS] == '["/data"]'
