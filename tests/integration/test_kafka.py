"""Kafka is a real broker: what is produced is consumed, and a group's committed offset holds."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from screwops_settings import StackSettings, kafka_client_options

from tests.support import unique


async def test_consumer_group_commits_and_a_new_member_resumes_after_the_offset(
    settings: StackSettings, kafka_topic: str
) -> None:
    producer = AIOKafkaProducer(**kafka_client_options(settings.kafka), acks="all")
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(kafka_topic, f"m{i}".encode(), key=b"k")
    finally:
        await producer.stop()

    group = unique("group")

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            kafka_topic,
            **kafka_client_options(settings.kafka),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    first = consumer()
    await first.start()
    try:
        seen = []
        async for message in first:
            seen.append(message.value)
            if len(seen) == 4:
                await first.commit()
                break
    finally:
        await first.stop()
    assert seen == [f"m{i}".encode() for i in range(4)]

    second = consumer()
    await second.start()
    try:
        message = await second.getone()
        committed = await second.committed(TopicPartition(kafka_topic, 0))
    finally:
        await second.stop()
    assert committed == 4
    assert message.value == b"m4"
