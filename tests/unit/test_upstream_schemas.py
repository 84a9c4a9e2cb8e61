"""docs/upstream.md and docs/schemas/ describe what the consumers accept from outside producers:
the committed schemas are what the contracts generate today, and the documented message and kcat
command make a valid event of each upstream topic with the key and headers the bus sets."""

from __future__ import annotations

import re
from pathlib import Path

from screwops_contracts.events import EVENTS_BY_TOPIC, UPSTREAM, UPSTREAM_TOPICS, access_rights
from screwops_contracts.schemas import render, schema

DOCS = Path(__file__).resolve().parents[2] / "docs"
GUIDE = (DOCS / "upstream.md").read_text()


def test_the_committed_schemas_are_fresh() -> None:
    committed = {path.name: path.read_text() for path in (DOCS / "schemas").glob("*.json")}
    assert committed == render(), "docs/schemas is stale: run `make schemas`"


def test_there_is_a_schema_for_each_topic_upstream_may_write() -> None:
    assert access_rights()[UPSTREAM].write == set(UPSTREAM_TOPICS)
    for topic in UPSTREAM_TOPICS:
        document = schema(topic)
        assert document["properties"]["type"]["const"] == topic
        assert document["properties"]["schema_version"]["const"] == (
            EVENTS_BY_TOPIC[topic].SCHEMA_VERSION
        )
        assert f"schemas/{topic}.json" in GUIDE


def test_the_documented_message_is_a_valid_event() -> None:
    (body,) = re.findall(r"```json\n(.*?)```", GUIDE, re.S)
    event = EVENTS_BY_TOPIC["training.requested"].model_validate_json(body)
    assert event.causation_id is None
    assert str(event.event_id) == event.correlation_id


def test_the_kcat_command_publishes_it_as_the_bus_does() -> None:
    (command,) = re.findall(r"```bash\n(.*?)```", GUIDE, re.S)
    (body,) = re.findall(r"```json\n(.*?)```", GUIDE, re.S)
    event = EVENTS_BY_TOPIC["training.requested"].model_validate_json(body)
    assert f"-t {event.TOPIC} " in command
    assert f"-k {event.key.decode()} " in command
    assert "-H content-type=application/json" in command
    assert f"-H event-type={event.type}" in command
    for option in (
        "security.protocol=SASL_SSL",
        "sasl.mechanisms=SCRAM-SHA-512",
        "sasl.username=upstream",
        'sasl.password="$(cat ~/.cache/screwops/secrets/kafka/upstream)"',
        "ssl.ca.location=$HOME/.cache/screwops/tls/ca.crt",
    ):
        assert f"-X {option}" in command
    # A fresh id per request: the consumers drop a second message with the same event_id.
    assert ".event_id = $id" in command
