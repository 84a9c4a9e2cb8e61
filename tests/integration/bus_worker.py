"""A consumer process for the crash test: one effect per event, optionally hanging after it.

Run as ``python -m tests.integration.bus_worker TOPIC OUTPUT_TOPIC GROUP DATABASE [--hang]
[--slow SECONDS]``. With ``--hang`` the handler blocks after its effect and its publish, before
returning, so the test can kill the process at the worst moment: effects done, offset not
committed. With ``--slow`` it takes that long after its effect, so a SIGTERM arrives mid-handler.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from faststream import FastStream
from motor.motor_asyncio import AsyncIOMotorClient
from screwops_bus import Bus
from screwops_contracts import DatasetIngested, DatasetLabeled, DatasetLabeledPayload
from screwops_settings import StackSettings


async def main(topic: str, output: str, group: str, database: str, hang: bool, slow: float) -> None:
    settings = StackSettings()
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(settings.mongo.uri.get_secret_value())
    db = client[database]
    bus = Bus(settings, service="crash-test", db=db)

    @bus.consumer(DatasetIngested, topic=topic, group=group)
    async def on_dataset_ingested(event: DatasetIngested) -> None:
        await db.effects.update_one(
            {"_id": str(event.event_id)},
            {"$setOnInsert": {"dataset": event.payload.dataset_id}, "$inc": {"deliveries": 1}},
            upsert=True,
        )
        labeled = DatasetLabeledPayload(
            dataset_id=event.payload.dataset_id,
            version=event.payload.version,
            labels_key="labels.json",
            label_counts={"good": event.payload.image_count},
            excluded_count=0,
        )
        await bus.publish(
            DatasetLabeled.caused_by(event, labeled, producer="crash-test"), topic=output
        )
        if hang:
            await asyncio.Event().wait()
        await asyncio.sleep(slow)

    await FastStream(bus.broker).run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("topic", "output", "group", "database"):
        parser.add_argument(name)
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--slow", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(main(args.topic, args.output, args.group, args.database, args.hang, args.slow))
