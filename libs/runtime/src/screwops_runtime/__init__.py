"""The one way a ScrewOps service starts and stops.

Every service's ``__main__`` builds its settings, asks :meth:`Runtime.create` for the shared
machinery (telemetry, MongoDB, MinIO, the bus), wires its own store, domain service, handlers and
gRPC API, and calls :meth:`Runtime.serve`. Start-up order and graceful shutdown are therefore the
same everywhere: stores ready, then the consumers, the background work and the gRPC API; on SIGTERM
the API drains, the background work stops, the consumers finish in-flight events, and spans are
flushed; a start that fails undoes what had started the same way and raises. A service never starts
or cancels its own asyncio tasks in ``__main__``: it hands them to :meth:`Runtime.serve` as
:class:`Background` work (a loop is wrapped in a :class:`Task`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from faststream import FastStream
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_bus import Bus, MongoOutbox, Relay
from screwops_rpc import Server
from screwops_settings import ServiceSettings
from screwops_storage import ObjectStore, database
from screwops_telemetry import LoopLag, RpcServerMetrics, Telemetry, setup_telemetry

__all__ = ["Background", "Runtime", "Task"]

log = logging.getLogger("screwops.runtime")

Hook = Callable[[], Awaitable[None]]


class Background(Protocol):
    """Work that runs beside the API: started before the port opens (so the first call finds it
    running), stopped once in-flight calls drained (so what they left behind is still handled)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Task:
    """A loop that runs until cancelled, as :class:`Background` work."""

    run: Callable[[], Coroutine[Any, Any, None]]
    name: str
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def start(self) -> None:
        """Start the loop in the serving event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait until it has ended."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


@dataclass(frozen=True)
class Runtime:
    """The shared machinery of one service process."""

    settings: ServiceSettings
    telemetry: Telemetry
    db: AsyncIOMotorDatabase[Any]
    objects: ObjectStore
    bus: Bus

    @classmethod
    def create(cls, settings: ServiceSettings, *, instrument_grpc: bool = False) -> Runtime:
        """Telemetry first (so start-up is traced and logged), then the stores and the bus."""
        telemetry = setup_telemetry(
            settings.service_name,
            settings.stack,
            metrics_port=settings.metrics_port,
            metrics_host=settings.metrics_host,
            instrument_grpc=instrument_grpc,
            log_level=settings.log_level,
        )
        db = database(settings.stack.mongo, appname=settings.service_name)
        objects = ObjectStore.from_settings(settings.stack.minio)
        bus = Bus(
            settings.stack,
            service=settings.service_name,
            db=db,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            bodies=objects,
        )
        return cls(settings=settings, telemetry=telemetry, db=db, objects=objects, bus=bus)

    def outbox_relay(self, collections: Iterable[str]) -> Task:
        """The background work that publishes what the service's writes in ``collections``
        still owe Kafka (see :mod:`screwops_bus.outbox`), every ``outbox_interval_s``."""
        relay = Relay(
            MongoOutbox(self.db, collections),
            self.bus.publish,
            interval=self.settings.outbox_interval_s,
            retry=self.bus.retry,
            meter_provider=self.telemetry.meter_provider,
        )
        return Task(relay.run, name="outbox-relay")

    async def serve(
        self,
        *,
        api: Server | None = None,
        count_calls: bool = True,
        on_start: Sequence[Hook] = (),
        background: Sequence[Background] = (),
    ) -> None:
        """Run until SIGTERM/SIGINT: the dead-letter bucket ensured and ``on_start`` hooks, then
        the consumers, ``background`` (in order) and the gRPC API; on shutdown the API drains,
        then ``background`` stops (in reverse order) before the consumers do.

        A start that fails (the API's port is taken, a hook raises) stops whatever had started, as
        a shutdown would, and re-raises: FastStream runs no shutdown hooks for an app that never
        finished starting, and background work left running would keep the process alive.

        Every call the API answers is counted by method and status, with its duration
        (:class:`~screwops_telemetry.RpcServerMetrics`), unless ``count_calls`` is False: for an
        API that counts its calls in its own metrics already (the gateway's, on its hot path)."""
        app = FastStream(self.bus.broker, logger=log)
        # The consumers run once the app started: only then can their lag be sampled.
        sampler = Task(self.bus.run_lag_sampler, name="consumer-lag")
        ticker = Task(LoopLag(self.telemetry.meter_provider).run, name="event-loop-lag")
        # What runs, in start order; stopped in reverse, so the API drains before its background.
        running: list[Background] = []
        opened = False

        @app.on_startup
        async def prepare() -> None:
            # Any consumer may have to keep a dead letter's body there.
            await self.objects.ensure_buckets(self.settings.stack.minio.dead_letter_bucket)
            for hook in on_start:
                await hook()

        @app.after_startup
        async def open_api() -> None:
            nonlocal opened
            for work in (ticker, sampler, *background):
                await work.start()
                running.append(work)
            if api is not None:
                if count_calls:
                    api.count_calls(RpcServerMetrics(self.telemetry.meter_provider).record)
                await api.start()
                running.append(api)
                log.info("%s serving gRPC on port %d", self.settings.service_name, api.port)
            opened = True

        @app.on_shutdown
        async def drain_api() -> None:
            while running:
                await running.pop().stop()

        @app.after_shutdown
        async def release() -> None:
            self.db.client.close()
            self.telemetry.shutdown()

        try:
            await app.run()
        except Exception as error:
            if opened:
                raise
            log.error("%s could not start: %s", self.settings.service_name, error)
            try:
                await app.stop()
            except Exception:
                log.exception(
                    "%s did not stop cleanly after a failed start", self.settings.service_name
                )
            raise
