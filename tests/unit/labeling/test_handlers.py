"""Labeling's handlers on FastStream's in-memory broker: ``dataset.ingested`` in and
``dataset.labeled`` out (once, however often the input comes); ``inspection.completed`` into the
review queue; ``training.requested`` hands the reviewed inspections to the dataset."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from screwops_bus import Bus
from screwops_contracts import DatasetLabeled, Topic, dlq_topic
from screwops_contracts.datasets import Bucket, Label
from screwops_labeling import handlers

from tests.fakes import memory_bus
from tests.unit.labeling.fakes import Harness, harness, inspection, training_requested


@dataclass
class Wired:
    bus: Bus
    h: Harness
    labeled: list[DatasetLabeled] = field(default_factory=list)
    dead: list[bytes] = field(default_factory=list)


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    bus = memory_bus("labeling")
    h = harness(publish=bus.publish)  # the service publishes through the bus, as in __main__
    handlers.register(bus, h.service)
    w = Wired(bus=bus, h=h)

    @bus.broker.subscriber(Topic.DATASET_LABELED)
    async def on_dataset_labeled(event: DatasetLabeled) -> None:
        w.labeled.append(event)

    @bus.broker.subscriber(dlq_topic(Topic.DATASET_INGESTED))
    async def on_dead_letter(message: KafkaMessage) -> None:
        w.dead.append(message.body)

    async with TestKafkaBroker(bus.broker):
        yield w


async def test_a_labeled_version_is_announced_once_however_often_it_is_ingested(
    wired: Wired,
) -> None:
    event, _ = wired.h.ingest("screws", 1, [("good/0.png", Label.GOOD), ("bad/0.png", Label.BAD)])

    await wired.bus.publish(event)
    await wired.bus.publish(event)

    [labeled] = wired.labeled
    assert labeled.producer == "labeling"
    assert labeled.causation_id == event.event_id
    assert labeled.payload.label_counts == {"good": 1, "bad": 1}
    assert wired.dead == []


async def test_a_version_whose_manifest_is_missing_is_dead_lettered(wired: Wired) -> None:
    event, _ = wired.h.ingest("screws", 1, [("good/0.png", Label.GOOD)])
    wired.h.objects.objects.clear()

    await wired.bus.publish(event)

    assert wired.labeled == []
    assert len(wired.dead) == 1


async def test_an_uncertain_inspection_lands_in_the_review_queue(wired: Wired) -> None:
    event = inspection(probability=0.52)

    await wired.bus.publish(event)

    assert list(wired.h.store.reviews) == [str(event.event_id)]


async def test_a_training_request_hands_the_reviewed_inspections_over(wired: Wired) -> None:
    picture = b"reviewed screw"
    key, sha = wired.h.keep_inspection_image(picture)
    queued = inspection(probability=0.52, image_key=key)
    await wired.bus.publish(queued)
    await wired.h.service.submit_review(str(queued.event_id), Label.GOOD, reviewer="rev")

    await wired.bus.publish(training_requested("line-7"))

    assert wired.h.objects.objects[(Bucket.DROP, f"line-7/good/{sha}")] == picture
    assert (Bucket.DROP, "line-7/_READY") in wired.h.objects.objects
