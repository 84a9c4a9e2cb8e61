"""The one way a ScrewOps service starts and stops.

Every service's ``__main__`` builds its settings, asks :meth:`Runtime.create` for the shared
machinery (telemetry, MongoDB, MinIO, the bus), wires its own store, domain service, handlers and
gRPC API, and calls :meth:`Runtime.serve`. Start-up order and graceful shutdown are therefore the
same everywhere: stores ready, then the gRPC API and the consumers; on SIGTERM the API drains, the
consumers finish in-flight events, and spans are flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faststream import FastStream
from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_bus import Bus
from screwops_rpc import Server
from screwops_settings import ServiceSettings
from screwops_storage import ObjectStore, database
from screwops_telemetry import Telemetry, setup_telemetry

__all__ = ["Runtime"]

log = logging.getLogger("screwops.runtime")

Hook = Callable[[], Awaitable[None]]


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
        bus = Bus(
            settings.stack,
            service=settings.service_name,
            db=db,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        )
        return cls(
            settings=settings,
            telemetry=telemetry,
            db=db,
            objects=ObjectStore.from_settings(settings.stack.minio),
            bus=bus,
        )

    async def serve(self, *, api: Server | None = None, on_start: Sequence[Hook] = ()) -> None:
        """Run until SIGTERM/SIGINT: ``on_start`` hooks, then consumers and the gRPC API."""
        app = FastStream(self.bus.broker, logger=log)
        samplers: list[asyncio.Task[None]] = []

        @app.on_startup
        async def prepare() -> None:
            for hook in on_start:
                await hook()

        @app.after_startup
        async def open_api() -> None:
            # The consumers run now: their lag can be sampled for Prometheus.
            samplers.append(asyncio.create_task(self.bus.run_lag_sampler(), name="consumer-lag"))
            if api is not None:
                await api.start()
                log.info("%s serving gRPC on port %d", self.settings.service_name, api.port)

        @app.on_shutdown
        async def drain_api() -> None:
            for sampler in samplers:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            if api is not None:
                await api.stop()

        @app.after_shutdown
        async def release() -> None:
            self.db.client.close()
            self.telemetry.shutdown()

        await app.run()
