"""Labeling's entry point: ``python -m screwops_labeling``. Wiring only."""

from __future__ import annotations

import asyncio
import functools

from screwops_contracts.datasets import Bucket
from screwops_rpc import bearer_auth
from screwops_runtime import Runtime, Task

from screwops_labeling import grpc_api, handlers
from screwops_labeling.config import LabelingSettings
from screwops_labeling.service import EXPIRY_INTERVAL_S, LabelingService
from screwops_labeling.store import OUTBOXES, MongoLabelingStore


def main() -> None:
    settings = LabelingSettings()
    runtime = Runtime.create(settings, instrument_grpc=True)
    store = MongoLabelingStore(runtime.db)
    service = LabelingService(store, runtime.objects, runtime.bus.publish, rules=settings.rules())
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
        await runtime.objects.ensure_buckets(Bucket.DATASETS)

    expire_reviews = Task(
        functools.partial(service.keep_expiring, EXPIRY_INTERVAL_S), name="expire-reviews"
    )
    asyncio.run(
        runtime.serve(
            api=api,
            on_start=[bootstrap, service.recover],
            background=[expire_reviews, runtime.outbox_relay(OUTBOXES)],
        )
    )


if __name__ == "__main__":
    main()
