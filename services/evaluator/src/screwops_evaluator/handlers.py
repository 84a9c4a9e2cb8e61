"""Evaluator's event handlers: trained runs are judged; production is followed."""

from __future__ import annotations

from screwops_bus import Bus
from screwops_contracts import ModelDeployed, ModelRolledBack
from screwops_contracts.events import ModelTrained

from screwops_evaluator.service import EvaluatorService


def register(bus: Bus, service: EvaluatorService) -> None:
    """Subscribe the service to the topics it consumes."""

    @bus.consumer(ModelTrained)
    async def on_model_trained(event: ModelTrained) -> None:
        await service.on_model_trained(event)

    @bus.consumer(ModelDeployed)
    async def on_model_deployed(event: ModelDeployed) -> None:
        await service.on_model_deployed(event)

    @bus.consumer(ModelRolledBack)
    async def on_model_rolled_back(event: ModelRolledBack) -> None:
        await service.on_model_rolled_back(event)
