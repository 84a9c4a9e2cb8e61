"""Monitor's entry point: ``python -m screwops_monitor``. Wiring only."""

from __future__ import annotations

import asyncio

from screwops_contracts.datasets import Bucket
from screwops_runtime import Runtime

from screwops_monitor import handlers
from screwops_monitor.config import MonitorSettings
from screwops_monitor.service import MonitorService
from screwops_monitor.store import MongoMonitorStore


def main() -> None:
    settings = MonitorSettings()
    runtime = Runtime.create(settings)
    store = MongoMonitorStore(runtime.db)
    service = MonitorService(
        store,
        runtime.objects,
        runtime.bus.publish,
        rules=settings.rules(),
        producer=settings.service_name,
        meter_provider=runtime.telemetry.meter_provider,
    )
    handlers.register(runtime.bus, service)

    async def bootstrap() -> None:
        await store.ensure_indexes()
        await runtime.objects.ensure_buckets(Bucket.MODELS)

    asyncio.run(runtime.serve(on_start=[bootstrap]))


if __name__ == "__main__":
    main()
