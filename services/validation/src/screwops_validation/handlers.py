"""Validation's event handlers: a labeled version is validated."""

from __future__ import annotations

from screwops_bus import Bus
from screwops_contracts import DatasetLabeled

from screwops_validation.service import ValidationService


def register(bus: Bus, service: ValidationService) -> None:
    """Subscribe the service to the topics it consumes."""

    @bus.consumer(DatasetLabeled)
    async def on_dataset_labeled(event: DatasetLabeled) -> None:
        await service.on_dataset_labeled(event)
