"""Trainer's entry point: ``python -m screwops_trainer``. Wiring only."""

from __future__ import annotations

import asyncio

from screwops_contracts.datasets import Bucket
from screwops_contracts.models import ModelKind
from screwops_runtime import Runtime, Task

from screwops_trainer import goodonly, handlers, model
from screwops_trainer.config import TrainerSettings
from screwops_trainer.provenance import git_sha, package_versions
from screwops_trainer.scoring import score_saved_model
from screwops_trainer.service import TrainerService
from screwops_trainer.store import MongoTrainerStore


def main() -> None:
    settings = TrainerSettings()
    model.configure_tensorflow(
        intra_op_threads=settings.intra_op_threads, inter_op_threads=settings.inter_op_threads
    )
    runtime = Runtime.create(settings)
    rules = settings.rules()
    store = MongoTrainerStore(runtime.db)
    service = TrainerService(
        store,
        runtime.objects,
        runtime.bus.emit,
        goodonly.fit if rules.model_kind is ModelKind.GOOD_ONLY else model.fit,
        score_saved_model,
        rules=rules,
        git_sha=git_sha(settings.git_sha),
        packages=package_versions(),
        meter_provider=runtime.telemetry.meter_provider,
        tracer_provider=runtime.telemetry.tracer_provider,
    )
    handlers.register(runtime.bus, service, max_run_s=rules.claims.max_run_s)

    async def bootstrap() -> None:
        await store.ensure_indexes()
        await runtime.objects.ensure_buckets(Bucket.MODELS)

    sweep = Task(service.keep_sweeping, name="sweep-attempts")
    asyncio.run(runtime.serve(on_start=[bootstrap], background=[sweep]))


if __name__ == "__main__":
    main()
