"""Evaluator's entry point: ``python -m screwops_evaluator``. Wiring only."""

from __future__ import annotations

import asyncio

from screwops_contracts.datasets import Bucket
from screwops_runtime import Runtime
from screwops_serving import TritonModels

from screwops_evaluator import handlers
from screwops_evaluator.config import EvaluatorSettings
from screwops_evaluator.service import EvaluatorService
from screwops_evaluator.staging import Staging, StagingArea
from screwops_evaluator.store import MongoEvaluatorStore


def main() -> None:
    settings = EvaluatorSettings()
    runtime = Runtime.create(settings)
    store = MongoEvaluatorStore(runtime.db)
    staging = StagingArea(
        TritonModels(settings.stack.triton.grpc_url, load_timeout_s=settings.load_timeout_s),
        runtime.objects,
        Staging(
            repository=settings.triton_repository,
            model=settings.staging_model,
            max_batch_size=settings.max_batch_size,
            check_timeout_s=settings.check_timeout_s,
            infer_timeout_s=settings.infer_timeout_s,
        ),
    )
    service = EvaluatorService(
        store,
        runtime.objects,
        staging,
        runtime.bus.emit,
        gate=settings.rules(),
        concurrency=settings.concurrency,
        tracer_provider=runtime.telemetry.tracer_provider,
        meter_provider=runtime.telemetry.meter_provider,
    )
    handlers.register(runtime.bus, service)

    async def bootstrap() -> None:
        await store.ensure_indexes()
        await runtime.objects.ensure_buckets(Bucket.IMAGES, Bucket.DATASETS, Bucket.MODELS)

    asyncio.run(runtime.serve(on_start=[bootstrap]))


if __name__ == "__main__":
    main()
