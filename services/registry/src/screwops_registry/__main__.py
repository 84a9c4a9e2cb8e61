"""Registry's entry point: ``python -m screwops_registry``. Wiring only."""

from __future__ import annotations

import asyncio
import functools

from screwops.v1 import registry_pb2, registry_pb2_grpc
from screwops_contracts.datasets import Bucket
from screwops_rpc import Api, Server, bearer_auth
from screwops_runtime import Runtime, Task
from screwops_serving import TritonModels

from screwops_registry import handlers
from screwops_registry.config import RegistrySettings
from screwops_registry.grpc_api import RegistryApi
from screwops_registry.placement import Deployment, Placement
from screwops_registry.service import RegistryService
from screwops_registry.store import MongoRegistryStore


def main() -> None:
    settings = RegistrySettings()
    runtime = Runtime.create(settings, instrument_grpc=True)
    store = MongoRegistryStore(runtime.db)
    service = RegistryService(
        store,
        Placement(
            runtime.objects,
            TritonModels(settings.stack.triton.grpc_url, load_timeout_s=settings.load_timeout_s),
            Deployment(
                repository=settings.triton_repository,
                keep_versions=settings.keep_versions,
                max_batch_size=settings.max_batch_size,
                queue_delay_us=settings.queue_delay_us,
                check_timeout_s=settings.check_timeout_s,
            ),
        ),
        runtime.bus.emit,
        runtime.bus.publish,
        producer=settings.service_name,
    )
    handlers.register(runtime.bus, service)
    api = Server(
        [
            Api(
                name=registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
                add=registry_pb2_grpc.add_RegistryServiceServicer_to_server,
                servicer=RegistryApi(service),
            )
        ],
        host=settings.grpc_host,
        port=settings.grpc_port,
        interceptors=bearer_auth(settings.auth_tokens),
    )

    async def bootstrap() -> None:
        await store.ensure_indexes()
        await runtime.objects.ensure_buckets(Bucket.MODELS)

    watch_triton = Task(
        functools.partial(service.keep_serving, settings.restore_interval_s), name="restore"
    )
    asyncio.run(
        runtime.serve(api=api, on_start=[bootstrap, service.restore], background=[watch_triton])
    )


if __name__ == "__main__":
    main()
