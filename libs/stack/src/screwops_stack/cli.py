"""``screwops-stack up|down|status|clean``: the native stack's front door (``make up`` calls it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import httpx
import psutil
import typer
from rich.console import Console
from rich.table import Table
from screwops_rpc.health import problem as grpc_health_problem
from screwops_settings import StackSettings, console_admin_password_file
from screwops_settings.services import Service

from screwops_stack import certificates, processes, supervisor
from screwops_stack.kafka_security import StaleStackError
from screwops_stack.servers import BIND_HOST, DEPLOY, Layout, NotReadyError, Server, servers

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
    running = processes.find(layout.pidfile(server.name))
    if running is not None and (why := _outdated(server, running)):
        console.print(f"  {server.name:<11} restarting: {why}")
        processes.stop(layout.pidfile(server.name), timeout=server.stop_timeout)
        running = None
    if running is None:
        try:
            # A prepare step may log (Kafka formats its storage) before any process has started.
            layout.logs.mkdir(parents=True, exist_ok=True)
            server.prepare()
        except (OSError, subprocess.CalledProcessError, StaleStackError) as exc:
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


def _outdated(server: Server, running: psutil.Process) -> str:
    try:
        cmdline = running.cmdline()
    except psutil.Error:  # it exited meanwhile: starting it anew is what comes next anyway
        return ""
    # Empty while a process just started has not exec'd yet: nothing to judge, so no restart.
    return server.outdated(cmdline) if cmdline else ""


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
    # Before the servers start side by side, so Kafka's preparation finds the one CA made here.
    layout.logs.mkdir(parents=True, exist_ok=True)
    try:
        certificates.ensure_grpc_certificate(layout.home, log=layout.log("tls"))
    except (OSError, subprocess.CalledProcessError) as exc:
        console.print(f"[red]issuing the gRPC certificate failed: {exc}[/red]")
        raise typer.Exit(1) from None
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
    """Stop exactly the processes the stack started, by their recorded pids, in reverse order.

    Without names the services go first (they finish in-flight work while the servers are up).
    """
    settings = StackSettings()
    layout = Layout(settings.home)
    if not names and processes.stop(supervisor.pidfile(settings), timeout=120):
        console.print("  services    stopped")
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


@app.command("issue-client-cert")
def issue_client_cert(
    name: Annotated[
        str, typer.Argument(help="The client's name (a camera's), its certificate's subject CN.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Directory to write NAME.crt and NAME.key to (default: tls/clients)."),
    ] = None,
) -> None:
    """Issue a production-line client's certificate from the stack's CA, for a gateway that
    requires client certificates (mTLS): it records NAME on the client's inspections."""
    layout = Layout(StackSettings().home)
    layout.logs.mkdir(parents=True, exist_ok=True)
    directory = out or layout.home / "tls" / "clients"
    try:
        cert, key = certificates.issue_client_certificate(
            layout.home, name, directory, log=layout.log("tls")
        )
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"certificate: {cert}\nkey:         {key} (owner-only)")
    console.print(f"use: screwops --cert {cert} --key {key} inspect IMAGE")


services_app = typer.Typer(help="The ScrewOps services, supervised, on the native stack.")
app.add_typer(services_app, name="services")


def _service_problem(spec: Service) -> str:
    """Empty when the service answers on its metrics port (and gRPC health, if it has an API;
    its web app's ``/healthz``, if it serves HTTP)."""
    try:
        httpx.get(f"http://{BIND_HOST}:{spec.metrics_port}/metrics", timeout=2.0)
    except httpx.HTTPError as exc:
        return f"metrics endpoint: {exc!r}"
    if spec.http_port is not None:
        try:
            answer = httpx.get(f"http://{BIND_HOST}:{spec.http_port}/healthz", timeout=2.0)
        except httpx.HTTPError as exc:
            return f"web app: {exc!r}"
        if answer.status_code != 200:
            return f"web app: /healthz answered {answer.status_code}"
    if spec.grpc_port is None:
        return ""
    return grpc_health_problem(f"{BIND_HOST}:{spec.grpc_port}")


@services_app.command("up")
def services_up(
    names: Annotated[list[str] | None, typer.Argument(help="Services (default: all).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each service.")] = 180.0,
) -> None:
    """Start the supervisor (if not running) and wait until every service answers."""
    settings = StackSettings()
    layout = Layout(settings.home)
    specs = supervisor.available(names)
    pidfile = supervisor.pidfile(settings)
    running = processes.find(pidfile)
    supervised = (
        set(running.cmdline()[running.cmdline().index("supervise") + 1 :]) if running else set()
    )
    wanted = supervised | {s.name for s in specs}
    if running is not None and not wanted <= supervised:
        console.print(f"restarting the supervisor to add {sorted(wanted - supervised)}")
        processes.stop(pidfile, timeout=120)
        running = None
    if running is None:
        processes.start(
            [sys.executable, "-m", "screwops_stack", "supervise", *sorted(wanted)],
            pidfile=supervisor.pidfile(settings),
            logfile=layout.log("supervisor-stdout"),
            env=dict(os.environ),
            cwd=layout.home,
        )
    deadline = time.monotonic() + timeout
    for spec in specs:
        problem = _service_problem(spec)
        while problem and time.monotonic() < deadline:
            time.sleep(0.5)
            problem = _service_problem(spec)
        if problem:
            console.print(
                f"[red]{spec.name} is not ready: {problem}[/red]\n"
                f"log: {layout.log(spec.name)}\n--- last lines ---\n{_tail(layout.log(spec.name))}"
            )
            raise typer.Exit(1)
        console.print(f"  {spec.name:<11} [green]ready[/green]")
        admin_password = console_admin_password_file(settings.home)
        if spec.name == "console" and admin_password.is_file():
            console.print(
                f"  {'':<11} log in as admin: the password is in {admin_password} (owner-only)"
            )


@services_app.command("down")
def services_down() -> None:
    """Stop the supervisor, which stops every service gracefully first."""
    settings = StackSettings()
    stopped = processes.stop(supervisor.pidfile(settings), timeout=120)
    console.print("services stopped" if stopped else "services were not running")


@services_app.command("status")
def services_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Whether each service answers; exit 1 if one does not."""
    problems = {spec.name: _service_problem(spec) for spec in supervisor.available()}
    if as_json:
        states = [
            {"name": name, "ready": not problem, "problem": problem}
            for name, problem in problems.items()
        ]
        typer.echo(json.dumps(states, indent=2))
    else:
        for name, problem in problems.items():
            console.print(
                f"  {name:<11} " + (f"[red]{problem}[/red]" if problem else "[green]ready[/green]")
            )
    if any(problems.values()):
        raise typer.Exit(1)


@app.command(hidden=True)
def supervise(names: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """The detached supervisor process (started by ``services up``)."""
    supervisor.main(names or [])
