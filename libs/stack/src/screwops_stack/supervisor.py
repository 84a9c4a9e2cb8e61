"""Runs the ScrewOps services as supervised processes on the native stack.

``screwops-stack services up`` starts one detached supervisor process; it starts every service
(``python -m screwops_<name>``), restarts a service that exits with exponential backoff, logs each
start, exit and restart to ``logs/supervisor.log``, and writes a Prometheus file_sd target for each
running service so Prometheus scrapes it as it appears. SIGTERM stops the services gracefully (they
finish in-flight events) and then the supervisor.

Which services there are and their ports come from the table of services
(``screwops_settings.services``) with the overrides of each service's own variables; each
service's settings take their defaults from the same table, so the supervisor, the service and
Prometheus agree by construction.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from screwops_settings import StackSettings
from screwops_settings.services import INGESTION, SERVICES, Service, service

from screwops_stack.servers import BIND_HOST, Layout, prometheus_targets_dir

log = logging.getLogger("screwops.supervisor")


def available(names: list[str] | None = None) -> list[Service]:
    """The services installed in this environment (every one in the table once all have landed),
    each with the ports its variables set, where it will listen."""
    specs = []
    for entry in [service(name) for name in names] if names else SERVICES:
        if importlib.util.find_spec(entry.module) is None:
            if names:
                raise ModuleNotFoundError(f"No module named {entry.module!r}", name=entry.module)
            continue
        specs.append(entry.configured())
    return specs


IMPORT_ROOTS = f"{INGESTION.env_prefix}IMPORT_ROOTS"


def service_env(settings: StackSettings) -> dict[str, str]:
    """The environment each service runs in: the supervisor's, with ingestion's import roots
    set to the developer's home, the temporary directory and the stack's home unless set already.

    Ingestion imports nothing until its roots are configured; on the local stack the developer
    is the only client, and the demo (under the stack's home) and the tests (under the
    temporary directory) import from there.
    """
    env = dict(os.environ)
    roots = [str(Path.home()), tempfile.gettempdir(), str(settings.home)]
    env.setdefault(IMPORT_ROOTS, json.dumps(roots))
    return env


KAFKA_USERNAME = "SCREWOPS_KAFKA__USERNAME"
KAFKA_PASSWORD = "SCREWOPS_KAFKA__PASSWORD"
MINIO_ACCESS_KEY = "SCREWOPS_MINIO__ACCESS_KEY"
MINIO_SECRET_KEY = "SCREWOPS_MINIO__SECRET_KEY"


def principal_env(env: dict[str, str], service: str) -> dict[str, str]:
    """``env`` with the service logging in to Kafka and MinIO as its own principal: its
    passwords are read from the stack home, never those the supervisor was started with (the
    operator's, the tests')."""
    own = {
        name: value for name, value in env.items() if name not in (KAFKA_PASSWORD, MINIO_SECRET_KEY)
    }
    return own | {KAFKA_USERNAME: service, MINIO_ACCESS_KEY: service}


class Supervisor:
    """Keeps each service running; see the module docstring."""

    def __init__(self, specs: list[Service], settings: StackSettings) -> None:
        self._specs = specs
        self._layout = Layout(settings.home)
        self._env = service_env(settings)
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

    async def _keep_running(self, spec: Service) -> None:
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

    async def _start(self, spec: Service) -> asyncio.subprocess.Process:
        logfile = self._layout.log(spec.name)
        with logfile.open("ab") as out:
            out.write(f"\n=== started {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                spec.module,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=principal_env(self._env, spec.name),
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
