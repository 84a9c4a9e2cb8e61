"""Start, find and stop the stack's server processes by the pid each start recorded.

A pid file holds the pid and when the process started, so ``down`` never signals a process that
merely reuses an old pid, and never looks processes up by name. The start is kept as seconds after
boot, not as a wall-clock time: Linux derives the boot time that psutil adds to a process's start
from the wall clock, rounded to whole seconds, at every read, so an NTP adjustment can move every
``create_time()`` by a second at once (seen in CI: mid-run, every live server looked gone).

Each server is started as the leader of its own session, so stopping it also stops the children it
spawned (Triton's backend stubs, for instance) and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Running:
    """A server process this stack started and that is still alive."""

    pid: int
    rss_bytes: int


# How far apart two readings of one process's start may be: the boot time's rounding moves a
# reading by a whole second. A pid reused by another process that started within this margin would
# need the whole pid space to wrap in that time.
_SAME_START_S = 1.5


def _since_boot(process: psutil.Process) -> float:
    """Seconds from boot to the process's start: no wall-clock adjustment moves it."""
    return process.create_time() - psutil.boot_time()


def _read_pidfile(pidfile: Path) -> tuple[int, float] | None:
    try:
        record = json.loads(pidfile.read_text())
        pid = int(record["pid"])
        if "since_boot" in record:
            return pid, float(record["since_boot"])
        # Written by a stack from before the start was kept after boot: still running servers.
        return pid, float(record["create_time"]) - psutil.boot_time()
    except (FileNotFoundError, ValueError, KeyError):
        return None


def find(pidfile: Path) -> psutil.Process | None:
    """The live process recorded in ``pidfile``, or None when it is gone or the pid was reused."""
    record = _read_pidfile(pidfile)
    if record is None:
        return None
    pid, since_boot = record
    try:
        process = psutil.Process(pid)
        if abs(_since_boot(process) - since_boot) > _SAME_START_S or not process.is_running():
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return process


def tree(process: psutil.Process) -> list[psutil.Process]:
    """The process and its descendants: what a server costs is its backend stubs' share too."""
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:  # it exited meanwhile: the caller's own calls on it will say so
        return [process]


def running(pidfile: Path) -> Running | None:
    """Pid and resident memory (the whole process group's) of a recorded, live server."""
    process = find(pidfile)
    if process is None:
        return None
    rss = 0
    for member in tree(process):
        try:
            rss += member.memory_info().rss
        except psutil.Error:
            continue
    return Running(pid=process.pid, rss_bytes=rss)


def start(
    argv: list[str], *, pidfile: Path, logfile: Path, env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached in its own session, logging to ``logfile``, and record its pid."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("ab") as log:
        log.write(f"\n=== started {time.strftime('%Y-%m-%dT%H:%M:%S')}: {argv}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    since_boot = _since_boot(psutil.Process(process.pid))
    pidfile.write_text(json.dumps({"pid": process.pid, "since_boot": since_boot, "argv": argv}))
    return process


def stop(pidfile: Path, *, timeout: float) -> bool:
    """Stop the recorded server's process group: SIGTERM, then SIGKILL after ``timeout``.

    Returns whether a live process was found to stop. The pid file is removed either way.
    """
    process = find(pidfile)
    pidfile.unlink(missing_ok=True)
    if process is None:
        return False
    pgid = process.pid
    members = tree(process)
    _signal_group(pgid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=timeout)
    if alive:
        _signal_group(pgid, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=10)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return
