"""Starting a server on a freshly wiped home: ``make clean-stack && make up`` in CI."""

from __future__ import annotations

import sys
from pathlib import Path

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
