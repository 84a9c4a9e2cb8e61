"""Monitor's entry point: ``python -m screwops_monitor``. Wiring only."""

from __future__ import annotations

import asyncio

from screwops_contracts.datasets import Bucket
from screwops_runtime import Runtime, Task

from screwops_monitor import handlers
from screwops_monitor.config import MonitorSettings
from screwops_monitor.errors import PrometheusErrorCounts
from screwops_monitor.registry import GrpcRegistry
from screwops_monitor.service import MonitorService
from screwops_monitor.store import MongoMonitorStore


def main() -> None:
    settings = MonitorSettings()
    runtime = Runtime.create(settings)
    store = MongoMonitorStore(runtime.db)
    prometheus = settings.stack.telemetry.prometheus_url
    errors = PrometheusErrorCounts(prometheus) if settings.judge_errors else None
    service = MonitorService(
        store,
        runtime.objects,
        runtime.bus.publish,
        rules=settings.rules(),
        controller_rules=settings.controller(),
        registry=GrpcRegistry(
            settings.registry_address,
            settings.registry_token.get_secret_value() or None,
            actor=settings.service_name,
            tls=settings.stack.grpc,
        ),
        errors=errors,
        producer=settings.service_name,
        meter_provider=runtime.telemetry.meter_provider,
    )
    handlers.register(runtime.bus, service)

    async def bootstrap() -> None:
        await store.ensure_indexes()
        await runtime.objects.ensure_buckets(Bucket.MODELS)

    checks = [Task(service.run_error_checks, name="rollout-errors")] if errors else []
    asyncio.run(runtime.serve(on_start=[bootstrap], background=checks))


if __name__ == "__main__":
    main()
