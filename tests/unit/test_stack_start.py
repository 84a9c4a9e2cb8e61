"""Starting a server on a freshly wiped home: ``make clean-stack && make up`` in CI."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil
from screwops_stack import cli, processes
from screwops_stack.servers import Layout, Server


def test_a_prepare_step_that_logs_runs_on_a_home_without_a_logs_directory(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "wiped")

    def prepare() -> None:
        with layout.log("formatter").open("ab") as log:
            log.write(b"storage formatted\n")

    server = Server(
        name="formatter",
        argv=[sys.executable, "-c", "import time; time.sleep(60)"],
        ready=lambda: None,
        ports=[],
        prepare=prepare,
    )
    try:
        outcome = cli._start(server, layout)
    finally:
        processes.stop(layout.pidfile("formatter"), timeout=10)

    assert outcome.error is None
    assert layout.log("formatter").read_bytes().startswith(b"storage formatted\n")


def _exec_cmdline(process: psutil.Process) -> list[str]:
    """The command line of a process just started, once it has exec'd (empty until then)."""
    deadline = time.monotonic() + 10
    while not (cmdline := process.cmdline()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return cmdline


def test_a_running_server_started_without_what_it_now_needs_is_restarted(tmp_path: Path) -> None:
    """A stack home from before a change (Triton with model control open) takes it up at the next
    ``make up``; a current server is left running."""
    layout = Layout(tmp_path)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]

    def server(flag: str) -> Server:
        return Server(
            name="sleeper",
            argv=[*sleeper, flag],
            ready=lambda: None,
            ports=[],
            outdated=lambda cmdline: "" if "--new" in cmdline else "started without --new",
        )

    try:
        assert cli._start(server("--old"), layout).error is None
        old = processes.find(layout.pidfile("sleeper"))
        assert old is not None
        assert cli._start(server("--new"), layout).error is None
        new = processes.find(layout.pidfile("sleeper"))
        assert new is not None
        assert new.pid != old.pid
        assert "--new" in _exec_cmdline(new)
        assert not old.is_running()
        assert cli._start(server("--new"), layout).error is None
        assert processes.find(layout.pidfile("sleeper")) == new
    finally:
        processes.stop(layout.pidfile("sleeper"), timeout=10)
