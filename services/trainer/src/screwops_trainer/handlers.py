"""Trainer's event handlers: a validated version, or a request, is trained on; a rejected
version is remembered so that nothing trains on it; a degradation is logged (the monitor's
``training.requested`` beside it is what starts a run)."""

from __future__ import annotations

from screwops_bus import Bus
from screwops_contracts import DatasetRejected, DatasetValidated, ModelDegraded, TrainingRequested

from screwops_trainer.service import TrainerService


def register(bus: Bus, service: TrainerService, *, max_run_s: float) -> None:
    """Subscribe the service to the topics it consumes.

    A training run happens inside its handler and may outlast Kafka's default poll interval;
    ``max_run_s`` keeps the consumer in its group until the run is done.
    """
    poll_ms = int(max_run_s * 1000)

    @bus.consumer(DatasetValidated, max_poll_interval_ms=poll_ms)
    async def on_dataset_validated(event: DatasetValidated) -> None:
        await service.on_dataset_validated(event)

    @bus.consumer(DatasetRejected)
    async def on_dataset_rejected(event: DatasetRejected) -> None:
        await service.on_dataset_rejected(event)

    @bus.consumer(TrainingRequested, max_poll_interval_ms=poll_ms)
    async def on_training_requested(event: TrainingRequested) -> None:
        await service.on_training_requested(event)

    @bus.consumer(ModelDegraded)
    async def on_model_degraded(event: ModelDegraded) -> None:
        service.on_model_degraded(event)
