"""Registry's entry point: ``python -m screwops_registry``. Wiring only."""

from __future__ import annotations

import asyncio
import functools

from screwops_contracts.datasets import Bucket
from screwops_rpc import bearer_auth
from screwops_runtime import Runtime, Task
from screwops_serving import TritonModels
from screwops_settings import triton_model_control_key

from screwops_registry import grpc_api, handlers
from screwops_registry.config import RegistrySettings
from screwops_registry.placement import Placement
from screwops_registry.service import RegistryService
from screwops_registry.store import OUTBOXES, MongoRegistryStore


def main() -> None:
    settings = RegistrySettings()
    runtime = Runtime.create(settings, instrument_grpc=True)
    rules = settings.rules()
    store = MongoRegistryStore(runtime.db, history_limit=settings.alias_history_limit)
    triton = TritonModels(
        settings.stack.triton.grpc_url, model_control_key=triton_model_control_key(settings.stack)
    )
    service = RegistryService(
        store,
        Placement(runtime.objects, triton, rules),
        runtime.bus.publish,
        producer=settings.service_name,
        policies=settings.release_policies(),
        rollouts=settings.rollout_policies(),
        alias_limit=settings.alias_limit,
    )
    handlers.register(runtime.bus, service)
    api = grpc_api.server(
        service,
        host=settings.grpc_host,
        port=settings.grpc_port,
        tls=settings.stack.grpc,
        require_client_cert=settings.require_client_cert,
        interceptors=bearer_auth(settings.auth_tokens, grpc_api.ROLES),
    )

    async def bootstrap() -> None:
        await store.ensure_indexes()
        await runtime.objects.ensure_buckets(Bucket.MODELS)

    watch_triton = Task(
        functools.partial(service.keep_serving, rules.restore_interval_s), name="restore"
    )
    asyncio.run(
        runtime.serve(
            api=api,
            on_start=[bootstrap, service.restore],
            background=[watch_triton, runtime.outbox_relay(OUTBOXES)],
        )
    )


if __name__ == "__main__":
    main()
