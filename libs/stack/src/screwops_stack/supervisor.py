"""Runs the ScrewOps services as supervised processes on the native stack.

``screwops-stack services up`` starts one detached supervisor process; it starts every service
(``python -m screwops_<name>``), restarts a service that exits with exponential backoff, logs each
start, exit and restart to ``logs/supervisor.log``, and writes a Prometheus file_sd target for each
running service so Prometheus scrapes it as it appears. SIGTERM stops the services gracefully (they
finish in-flight events) and then the supervisor.

Ports come from each service's own settings class (``screwops_<name>.config``), so the supervisor,
the service and Prometheus agree by construction.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from screwops_settings import ServiceSettings, StackSettings

from screwops_stack.servers import BIND_HOST, Layout, prometheus_targets_dir

# Start order: producers after their consumers' topics exist (all topics exist after `up`), so
# the order only matters for a readable log.
SERVICES = (
    "ingestion",
    "labeling",
    "validation",
    "trainer",
    "evaluator",
    "registry",
    "gateway",
    "monitor",
    "console",
)

log = logging.getLogger("screwops.supervisor")


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service and where it answers."""

    name: str
    module: str
    metrics_port: int
    grpc_port: int | None
    http_port: int | None = None
    """The web app's port, for a service that serves HTTP (the console)."""

    @property
    def ports(self) -> set[int]:
        """Every port the service listens on."""
        return {p for p in (self.metrics_port, self.grpc_port, self.http_port) if p is not None}

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module]


def available(names: list[str] | None = None) -> list[ServiceSpec]:
    """The services installed in this environment (all of ``SERVICES`` once they have landed)."""
    specs = []
    for name in names or SERVICES:
        module = f"screwops_{name}"
        try:
            config = importlib.import_module(f"{module}.config")
        except ModuleNotFoundError:
            if names:
                raise
            continue
        settings_class = next(
            value
            for value in vars(config).values()
            if isinstance(value, type)
            and issubclass(value, ServiceSettings)
            and value.__module__ == config.__name__
        )
        settings = settings_class()
        specs.append(
            ServiceSpec(
                name=name,
                module=module,
                metrics_port=settings.metrics_port,
                grpc_port=getattr(settings, "grpc_port", None),
                http_port=getattr(settings, "http_port", None),
            )
        )
    return specs


class Supervisor:
    """Keeps each service running; see the module docstring."""

    def __init__(self, specs: list[ServiceSpec], settings: StackSettings) -> None:
        self._specs = specs
        self._layout = Layout(settings.home)
        self._targets = prometheus_targets_dir(settings)
        self._stopping = asyncio.Event()
        self._processes: dict[str, asyncio.subprocess.Process] = {}

    async def run(self) -> None:
        """Supervise until SIGTERM/SIGINT, then stop every service gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        self._targets.mkdir(parents=True, exist_ok=True)
        watchers = [asyncio.create_task(self._keep_running(spec)) for spec in self._specs]
        await self._stopping.wait()
        log.info("stopping %d services", len(self._processes))
        await asyncio.gather(*(self._stop(name) for name in list(self._processes)))
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

    async def _keep_running(self, spec: ServiceSpec) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            process = await self._start(spec)
            code = await process.wait()
            self._targets.joinpath(f"{spec.name}.json").unlink(missing_ok=True)
            if self._stopping.is_set():
                return
            ran = time.monotonic() - started
            backoff = 1.0 if ran > 60 else min(backoff * 2, 30.0)
            log.warning(
                "%s exited with code %s after %.1fs; restarting in %.0fs (log: %s)",
                spec.name,
                code,
                ran,
                backoff,
                self._layout.log(spec.name),
            )
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
            except TimeoutError:
                continue

    async def _start(self, spec: ServiceSpec) -> asyncio.subprocess.Process:
        logfile = self._layout.log(spec.name)
        with logfile.open("ab") as out:
            out.write(f"\n=== started {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=dict(os.environ),
            )
        self._processes[spec.name] = process
        log.info("started %s (pid %d)", spec.name, process.pid)
        target = [
            {"targets": [f"{BIND_HOST}:{spec.metrics_port}"], "labels": {"service": spec.name}}
        ]
        self._targets.joinpath(f"{spec.name}.json").write_text(json.dumps(target))
        return process

    async def _stop(self, name: str, grace: float = 60.0) -> None:
        process = self._processes[name]
        if process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            log.error("%s did not stop within %.0fs; killing it", name, grace)
            process.kill()
            await process.wait()
        log.info("stopped %s (exit %s)", name, process.returncode)


def main(names: list[str]) -> None:
    """Entry point of the detached supervisor process."""
    settings = StackSettings()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(Layout(settings.home).log("supervisor"))],
    )
    specs = available(names or None)
    log.info("supervising %s", ", ".join(s.name for s in specs))
    asyncio.run(Supervisor(specs, settings).run())


def pidfile(settings: StackSettings) -> Path:
    """Where the supervisor's pid is recorded."""
    return Layout(settings.home).pidfile("supervisor")
