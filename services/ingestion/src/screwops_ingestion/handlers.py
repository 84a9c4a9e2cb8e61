"""Ingestion's event handlers: MinIO's bucket notifications (upstream drops)."""

from __future__ import annotations

from screwops_bus import Bus
from screwops_contracts.minio import BUCKET_EVENTS_TOPIC, BucketNotification

from screwops_ingestion.service import IngestionService


def register(bus: Bus, service: IngestionService) -> None:
    """Subscribe the service to the topics it consumes."""

    @bus.consumer(
        BucketNotification, topic=BUCKET_EVENTS_TOPIC, identity=BucketNotification.identity
    )
    async def on_bucket_notification(notification: BucketNotification) -> None:
        await service.on_bucket_drop(notification)
