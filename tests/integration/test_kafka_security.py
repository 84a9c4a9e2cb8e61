"""Kafka refuses whoever the event catalogue does not allow: a forged ``model.rolled_back`` from a
principal other than the registry, a client without SASL and TLS, a wrong password, a consumer in
another service's group. Each client here names the principal it acts as."""

from __future__ import annotations

import logging

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from pydantic import SecretStr
from screwops_contracts import OPERATOR, UPSTREAM, Topic
from screwops_settings import (
    KafkaSettings,
    StackSettings,
    kafka_client_options,
    kafka_password_file,
)

from tests.support import eventually


def as_principal(settings: StackSettings, name: str) -> KafkaSettings:
    """The stack's Kafka settings as principal ``name``, with its password from the stack home."""
    password = kafka_password_file(settings.home, name).read_text().strip()
    return settings.kafka.model_copy(update={"username": name, "password": SecretStr(password)})


async def end_offsets(settings: StackSettings, topic: str) -> dict[TopicPartition, int]:
    """The topic's end offsets, read as the operator (who may read every topic)."""
    reader = AIOKafkaConsumer(topic, **kafka_client_options(as_principal(settings, OPERATOR)))
    await reader.start()
    try:
        assigned = await eventually(
            lambda: _some(reader.assignment()), within=10, what=f"partitions of {topic}"
        )
        return dict(await reader.end_offsets(list(assigned)))
    finally:
        await reader.stop()


async def _some(partitions: set[TopicPartition]) -> set[TopicPartition] | None:
    return partitions or None


@pytest.mark.parametrize("principal", ["gateway", "monitor", "evaluator", UPSTREAM])
async def test_a_rollback_forged_by_anyone_but_the_registry_is_refused(
    settings: StackSettings, principal: str
) -> None:
    topic = str(Topic.MODEL_ROLLED_BACK)
    before = await end_offsets(settings, topic)
    producer = AIOKafkaProducer(
        **kafka_client_options(as_principal(settings, principal)), request_timeout_ms=5000
    )
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topic, b'{"forged": true}', key=b"screw-classifier")
    finally:
        await producer.stop()
    # Nothing reached the topic, so no gateway can have moved.
    assert await end_offsets(settings, topic) == before


async def test_a_service_cannot_read_in_another_services_group(settings: StackSettings) -> None:
    consumer = AIOKafkaConsumer(
        # A topic the gateway may read, so only the group can be what is refused.
        str(Topic.MODEL_DEPLOYED),
        **kafka_client_options(as_principal(settings, "gateway")),
        group_id="registry",
        enable_auto_commit=False,
    )

    async def join() -> None:
        await consumer.start()
        await consumer.getmany(timeout_ms=5000)

    with pytest.raises(GroupAuthorizationFailedError):
        await join()
    await consumer.stop()


async def test_a_plaintext_client_is_refused(settings: StackSettings) -> None:
    plain = settings.kafka.model_copy(update={"security_protocol": "PLAINTEXT"})
    producer = AIOKafkaProducer(**kafka_client_options(plain), request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()


async def test_a_wrong_password_is_refused(
    settings: StackSettings, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = as_principal(settings, "registry").model_copy(
        update={"password": SecretStr("not-the-registrys-password")}
    )
    producer = AIOKafkaProducer(**kafka_client_options(wrong), request_timeout_ms=5000)
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()
    assert "SaslAuthenticationFailed" in caplog.text


async def test_the_right_password_is_let_in(settings: StackSettings) -> None:
    producer = AIOKafkaProducer(**kafka_client_options(as_principal(settings, "registry")))
    await producer.start()
    await producer.stop()
