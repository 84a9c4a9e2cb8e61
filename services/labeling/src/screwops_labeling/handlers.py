"""Labeling's event handlers: new dataset versions to label, inspections to review, and
retraining requests to hand the reviewed images to."""

from __future__ import annotations

from screwops_bus import Bus
from screwops_contracts import DatasetIngested, InspectionCompleted, TrainingRequested

from screwops_labeling.service import LabelingService


def register(bus: Bus, service: LabelingService) -> None:
    """Subscribe the service to the topics it consumes (consumer group ``labeling``)."""

    @bus.consumer(DatasetIngested)
    async def on_dataset_ingested(event: DatasetIngested) -> None:
        await service.on_dataset_ingested(event)

    @bus.consumer(InspectionCompleted)
    async def on_inspection_completed(event: InspectionCompleted) -> None:
        await service.on_inspection_completed(event)

    @bus.consumer(TrainingRequested)
    async def on_training_requested(event: TrainingRequested) -> None:
        await service.on_training_requested(event)
