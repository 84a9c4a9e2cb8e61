"""The gateway's event handlers: the registry's deployments, rollbacks and rollout changes."""

from __future__ import annotations

from screwops_bus import Bus
from screwops_contracts import ModelDeployed, ModelRolledBack, ModelRolloutChanged

from screwops_gateway.service import GatewayService


def register(bus: Bus, service: GatewayService) -> None:
    """Subscribe the service to the topics it consumes (consumer group ``gateway``)."""

    @bus.consumer(ModelDeployed)
    async def on_model_deployed(event: ModelDeployed) -> None:
        await service.on_model_deployed(event)

    @bus.consumer(ModelRolledBack)
    async def on_model_rolled_back(event: ModelRolledBack) -> None:
        await service.on_model_rolled_back(event)

    @bus.consumer(ModelRolloutChanged)
    async def on_model_rollout_changed(event: ModelRolloutChanged) -> None:
        await service.on_model_rollout_changed(event)
