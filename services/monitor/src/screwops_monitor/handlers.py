"""Monitor's event handlers: production and its rollouts are followed; inspections and reviews are
watched."""

from __future__ import annotations

from screwops_bus import Bus
from screwops_contracts import (
    InspectionCompleted,
    InspectionReviewed,
    ModelDeployed,
    ModelRolledBack,
    ModelRolloutChanged,
)

from screwops_monitor.service import MonitorService


def register(bus: Bus, service: MonitorService) -> None:
    """Subscribe the service to the topics it consumes."""

    @bus.consumer(ModelDeployed)
    async def on_model_deployed(event: ModelDeployed) -> None:
        await service.on_model_deployed(event)

    @bus.consumer(ModelRolledBack)
    async def on_model_rolled_back(event: ModelRolledBack) -> None:
        await service.on_model_rolled_back(event)

    @bus.consumer(ModelRolloutChanged)
    async def on_rollout_changed(event: ModelRolloutChanged) -> None:
        await service.on_rollout_changed(event)

    @bus.consumer(InspectionCompleted)
    async def on_inspection_completed(event: InspectionCompleted) -> None:
        await service.on_inspection_completed(event)

    @bus.consumer(InspectionReviewed)
    async def on_inspection_reviewed(event: InspectionReviewed) -> None:
        await service.on_inspection_reviewed(event)
