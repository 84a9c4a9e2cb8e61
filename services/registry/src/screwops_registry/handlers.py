"""Registry's event handlers: the evaluator's verdicts on candidates."""

from __future__ import annotations

from screwops_bus import Bus
from screwops_contracts import ModelApproved, ModelRejected

from screwops_registry.service import RegistryService


def register(bus: Bus, service: RegistryService) -> None:
    """Subscribe the service to the topics it consumes."""

    @bus.consumer(ModelApproved)
    async def on_model_approved(event: ModelApproved) -> None:
        await service.on_approved(event)

    @bus.consumer(ModelRejected)
    async def on_model_rejected(event: ModelRejected) -> None:
        await service.on_rejected(event)
