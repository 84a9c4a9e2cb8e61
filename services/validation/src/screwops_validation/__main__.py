"""Validation's entry point: ``python -m screwops_validation``. Wiring only."""

from __future__ import annotations

import asyncio

from screwops_contracts.datasets import Bucket
from screwops_runtime import Runtime, Task

from screwops_validation import handlers
from screwops_validation.config import ValidationSettings
from screwops_validation.service import ValidationService
from screwops_validation.store import MongoValidationStore


def main() -> None:
    settings = ValidationSettings()
    runtime = Runtime.create(settings)
    store = MongoValidationStore(runtime.db)
    service = ValidationService(
        store,
        runtime.objects,
        runtime.bus.emit,
        rules=settings.rules(),
        meter_provider=runtime.telemetry.meter_provider,
    )
    handlers.register(runtime.bus, service)

    async def bootstrap() -> None:
        await store.ensure_indexes()
        await runtime.objects.ensure_buckets(Bucket.IMAGES, Bucket.DATASETS)

    sweep = Task(service.keep_sweeping, name="sweep-attempts")
    asyncio.run(runtime.serve(on_start=[bootstrap], background=[sweep]))


if __name__ == "__main__":
    main()
