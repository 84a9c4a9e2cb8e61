"""``screwops-stack up|down|status|clean``: the native stack's front door (``make up`` calls it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from screwops_settings import StackSettings

from screwops_stack import processes
from screwops_stack.servers import DEPLOY, Layout, NotReadyError, Server, servers

app = typer.Typer(help="The ScrewOps stack of real servers as plain processes on 127.0.0.1.")
console = Console(stderr=True)


@dataclass(frozen=True)
class Outcome:
    """How one server's start went, for the summary ``up`` prints."""

    server: Server
    seconds: float
    error: str | None = None


def _selected(names: list[str] | None) -> list[Server]:
    stack = servers(StackSettings())
    if not names:
        return stack
    known = {s.name for s in stack}
    unknown = sorted(set(names) - known)
    if unknown:
        raise typer.BadParameter(f"unknown server(s) {unknown}; known: {sorted(known)}")
    return [s for s in stack if s.name in names]


def _tail(path: object, lines: int = 15) -> str:
    try:
        with open(str(path), "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode(errors="replace")
    except FileNotFoundError:
        return "(no log yet)"


def _wait_ready(server: Server, process: subprocess.Popen[bytes] | None) -> Outcome:
    began = time.monotonic()
    deadline = began + server.start_timeout
    last = "no probe ran yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return Outcome(
                server, time.monotonic() - began, f"exited with code {process.returncode}"
            )
        try:
            server.ready()
        except NotReadyError as exc:
            last = str(exc)
        else:
            try:
                server.after_ready()
            except Exception as exc:  # reported like any failed start, with the log's tail
                return Outcome(server, time.monotonic() - began, f"bootstrap failed: {exc!r}")
            return Outcome(server, time.monotonic() - began)
        time.sleep(0.5)
    return Outcome(
        server, time.monotonic() - began, f"not ready after {server.start_timeout:.0f}s: {last}"
    )


def _start(server: Server, layout: Layout) -> Outcome:
    began = time.monotonic()
    process = None
    if processes.find(layout.pidfile(server.name)) is None:
        try:
            server.prepare()
        except (OSError, subprocess.CalledProcessError) as exc:
            return Outcome(server, time.monotonic() - began, f"preparing failed: {exc}")
        process = processes.start(
            server.argv,
            pidfile=layout.pidfile(server.name),
            logfile=layout.log(server.name),
            env=server.env,
            cwd=layout.home,
        )
    outcome = _wait_ready(server, process)
    return Outcome(server, time.monotonic() - began, outcome.error)


@app.command()
def install(
    names: Annotated[
        list[str] | None, typer.Argument(help="Servers to install (default: all).")
    ] = None,
) -> None:
    """Install or build the servers into the cache (a no-op for what is already there)."""
    _install(names)


def _install(names: list[str] | None) -> None:
    wanted = [n for n in (names or ["all"]) if n != "triton"]
    if not wanted:
        return
    result = subprocess.run(["bash", str(DEPLOY / "local" / "install.sh"), *wanted], check=False)
    if result.returncode != 0:
        console.print(f"[red]installing {wanted} failed (exit {result.returncode})[/red]")
        raise typer.Exit(result.returncode)


@app.command()
def up(
    names: Annotated[
        list[str] | None, typer.Argument(help="Servers to start (default: all).")
    ] = None,
) -> None:
    """Start the stack (installing first if needed) and wait until every server answers."""
    settings = StackSettings()
    layout = Layout(settings.home)
    selected = _selected(names)
    _install([s.name for s in selected] if names else None)
    began = time.monotonic()
    # The servers start side by side; each is then probed until it answers or its deadline passes.
    with ThreadPoolExecutor(max_workers=len(selected)) as pool:
        outcomes = list(pool.map(lambda s: _start(s, layout), selected))
    failed = [o for o in outcomes if o.error]
    for outcome in outcomes:
        mark = "[red]FAILED[/red]" if outcome.error else "[green]ready[/green]"
        console.print(f"  {outcome.server.name:<11} {mark} in {outcome.seconds:5.1f}s")
    for outcome in failed:
        log = layout.log(outcome.server.name)
        console.print(
            f"\n[red]{outcome.server.name} failed: {outcome.error}[/red]\n"
            f"log: {log}\n--- last lines ---\n{_tail(log)}"
        )
    if failed:
        raise typer.Exit(1)
    console.print(f"stack ready in {time.monotonic() - began:.1f}s (home: {layout.home})")


@app.command()
def down(
    names: Annotated[
        list[str] | None, typer.Argument(help="Servers to stop (default: all).")
    ] = None,
) -> None:
    """Stop exactly the processes the stack started, by their recorded pids, in reverse order."""
    layout = Layout(StackSettings().home)
    for server in reversed(_selected(names)):
        stopped = processes.stop(layout.pidfile(server.name), timeout=server.stop_timeout)
        console.print(f"  {server.name:<11} {'stopped' if stopped else 'was not running'}")


@dataclass(frozen=True)
class ServerState:
    """One row of ``status``: what a person or a script needs to find a server and its log."""

    name: str
    pid: int | None
    rss_mib: float | None
    problem: str
    ports: list[int]
    log: str

    @property
    def ready(self) -> bool:
        return not self.problem


def _state(server: Server, layout: Layout) -> ServerState:
    proc = processes.running(layout.pidfile(server.name))
    problem = "not running"
    if proc is not None:
        try:
            server.ready()
            problem = ""
        except NotReadyError as exc:
            problem = str(exc)
    return ServerState(
        name=server.name,
        pid=proc.pid if proc else None,
        rss_mib=round(proc.rss_bytes / 2**20, 1) if proc else None,
        problem=problem,
        ports=server.ports,
        log=str(layout.log(server.name)),
    )


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show each server's pid, memory, readiness, ports and log; exit 1 if one is not ready."""
    settings = StackSettings()
    layout = Layout(settings.home)
    states = [_state(server, layout) for server in servers(settings)]
    if as_json:
        typer.echo(json.dumps([asdict(s) | {"ready": s.ready} for s in states], indent=2))
    else:
        table = Table(title=f"ScrewOps stack ({layout.home})")
        for column in ("server", "pid", "RSS MiB", "state", "ports", "log"):
            table.add_column(column, overflow="fold")
        for s in states:
            table.add_row(
                s.name,
                str(s.pid or "-"),
                str(s.rss_mib or "-"),
                "[green]ready[/green]" if s.ready else f"[red]{s.problem}[/red]",
                ",".join(map(str, s.ports)),
                s.log,
            )
        Console().print(table)
    if not all(s.ready for s in states):
        raise typer.Exit(1)


@app.command()
def clean(
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Stop the stack and wipe its data and logs (installed servers stay cached)."""
    layout = Layout(StackSettings().home)
    if not yes:
        typer.confirm(f"Wipe all stack data under {layout.home}/data?", abort=True)
    down(None)
    for path in (layout.home / "data", layout.logs, layout.run):
        shutil.rmtree(path, ignore_errors=True)
    console.print("stack data wiped")
