"""Ingestion's entry point: ``python -m screwops_ingestion``. Wiring only."""

from __future__ import annotations

import asyncio

from screwops_contracts.datasets import Bucket
from screwops_rpc import bearer_auth
from screwops_runtime import Runtime

from screwops_ingestion import grpc_api, handlers
from screwops_ingestion.config import IngestionSettings
from screwops_ingestion.service import IngestionService
from screwops_ingestion.store import OUTBOXES, MongoIngestionStore


def main() -> None:
    settings = IngestionSettings()
    runtime = Runtime.create(settings, instrument_grpc=True)
    store = MongoIngestionStore(runtime.db)
    service = IngestionService(
        store,
        runtime.objects,
        runtime.bus.publish,
        rules=settings.rules(),
    )
    handlers.register(runtime.bus, service)
    api = grpc_api.server(
        service,
        host=settings.grpc_host,
        port=settings.grpc_port,
        tls=settings.stack.grpc,
        require_client_cert=settings.require_client_cert,
        interceptors=bearer_auth(settings.auth_tokens, grpc_api.ROLES),
        # Files up to 4x the limit still arrive, to be refused one by one with their reason.
        max_message_bytes=4 * settings.max_image_bytes,
    )

    async def bootstrap() -> None:
        await store.ensure_indexes()
        await store.adopt_unannounced()
        await runtime.objects.ensure_buckets(Bucket.IMAGES, Bucket.DATASETS)

    asyncio.run(
        runtime.serve(api=api, on_start=[bootstrap], background=[runtime.outbox_relay(OUTBOXES)])
    )


if __name__ == "__main__":
    main()
