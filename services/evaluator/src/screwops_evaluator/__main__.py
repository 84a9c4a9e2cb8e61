"""Evaluator's entry point: ``python -m screwops_evaluator``. Wiring only."""

from __future__ import annotations

import asyncio

from screwops_contracts.datasets import Bucket
from screwops_runtime import Runtime, Task
from screwops_serving import TritonModels
from screwops_settings import triton_model_control_key

from screwops_evaluator import handlers
from screwops_evaluator.config import EvaluatorSettings
from screwops_evaluator.service import EvaluatorService
from screwops_evaluator.staging import StagingArea
from screwops_evaluator.store import MongoEvaluatorStore


def main() -> None:
    settings = EvaluatorSettings()
    runtime = Runtime.create(settings)
    rules = settings.rules()
    store = MongoEvaluatorStore(runtime.db)
    triton = TritonModels(
        settings.stack.triton.grpc_url, model_control_key=triton_model_control_key(settings.stack)
    )
    staging = StagingArea(triton, runtime.objects, rules.staging)
    service = EvaluatorService(
        store,
        runtime.objects,
        staging,
        runtime.bus.emit,
        rules=rules,
        tracer_provider=runtime.telemetry.tracer_provider,
        meter_provider=runtime.telemetry.meter_provider,
    )
    handlers.register(runtime.bus, service)

    async def bootstrap() -> None:
        await store.ensure_indexes()
        await runtime.objects.ensure_buckets(Bucket.IMAGES, Bucket.DATASETS, Bucket.MODELS)

    sweep = Task(service.keep_sweeping, name="sweep-attempts")
    asyncio.run(runtime.serve(on_start=[bootstrap], background=[sweep]))


if __name__ == "__main__":
    main()
