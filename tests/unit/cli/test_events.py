"""``screwops events tail`` over records fed from memory: one line per event, JSON lines,
--limit, and topics that are not there."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from screwops_cli import events
from screwops_contracts import OPERATOR, DatasetIngested, DatasetIngestedPayload
from screwops_errors import NotFoundError, UnavailableError
from screwops_settings import KafkaSettings

from tests.unit.cli.support import screwops


def ingested(dataset: str) -> DatasetIngested:
    return DatasetIngested.origin(
        DatasetIngestedPayload(
            dataset_id=dataset,
            version=3,
            manifest_key=f"{dataset}/v3/manifest.json",
            image_count=600,
            labeled_by_layout=600,
            refused_count=0,
            duplicate_count=0,
            source="import",
        ),
        producer="ingestion",
    )


def kafka_record(value: bytes, offset: int, headers: list[tuple[str, bytes]] | None = None) -> Any:
    return SimpleNamespace(
        topic="dataset.ingested",
        partition=0,
        offset=offset,
        timestamp=1_790_000_000_000,
        key=b"screws",
        value=value,
        headers=headers or [],
    )


@dataclass
class Feed:
    records: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    asked: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    async def source(
        self, kafka: KafkaSettings, topic: str, *, from_beginning: bool
    ) -> AsyncGenerator[Any, None]:
        self.asked.append(
            {"kafka": kafka.username, "topic": topic, "from_beginning": from_beginning}
        )
        if self.error is not None:
            raise self.error
        try:
            for record in self.records:
                yield record
        finally:
            self.closed = True


@pytest.fixture
def feed(monkeypatch: pytest.MonkeyPatch) -> Feed:
    fake = Feed()
    monkeypatch.setattr(events, "source", fake.source)
    return fake


def test_each_event_prints_as_one_line_with_its_main_fields(
    feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCREWOPS_KAFKA__USERNAME", raising=False)
    first, second = ingested("screws"), ingested("bolts")
    feed.records = [
        kafka_record(first.model_dump_json().encode(), 0),
        kafka_record(b"\x89PNG", 1, [("x-dlq-reason", b"malformed event: 1 validation error")]),
        kafka_record(second.model_dump_json().encode(), 2),
    ]

    result = screwops("events", "tail", "dataset.ingested", "--from-beginning")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert "dataset.ingested" in lines[0]
    assert str(first.event_id) in lines[0]
    assert "dataset_id=screws version=3" in lines[0]
    assert "manifest_key=screws/v3/manifest.json" in lines[0]
    assert "not JSON" in lines[1]
    assert "dead-lettered: malformed event" in lines[1]
    assert str(second.event_id) in lines[2]
    # The CLI reads as the operator principal, the one the stack gives the CLI.
    assert feed.asked == [{"kafka": OPERATOR, "topic": "dataset.ingested", "from_beginning": True}]
    assert "tailing dataset.ingested from its beginning" in result.stderr


def test_json_prints_each_event_as_published_one_per_line_and_limit_stops(feed: Feed) -> None:
    sent = [ingested(f"d{n}") for n in range(3)]
    feed.records = [kafka_record(e.model_dump_json().encode(), n) for n, e in enumerate(sent)]

    result = screwops("events", "tail", "dataset.ingested", "--limit", "2", "--json")

    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [DatasetIngested.model_validate(p) for p in printed] == sent[:2]
    assert feed.asked[0]["from_beginning"] is False
    assert feed.closed


def test_a_value_that_is_not_json_still_prints_as_json(feed: Feed) -> None:
    feed.records = [kafka_record(b"\xff\xfe", 5)]
    result = screwops("events", "tail", "dataset.ingested", "--json")
    assert json.loads(result.stdout) == {
        "topic": "dataset.ingested",
        "partition": 0,
        "offset": 5,
        "unparsed": "\ufffd\ufffd",
    }


def test_an_unknown_topic_is_refused_with_the_catalogue(feed: Feed) -> None:
    feed.error = NotFoundError("topic 'datasets.ingested' does not exist on the broker")
    result = screwops("events", "tail", "datasets.ingested")
    assert result.exit_code == 2
    assert "unknown topic 'datasets.ingested'" in result.stderr
    assert "dataset.ingested, dataset.labeled" in result.stderr


def test_a_catalogue_topic_missing_on_the_broker_exits_4(feed: Feed) -> None:
    feed.error = NotFoundError("topic 'model.trained.dlq' does not exist on the broker")
    result = screwops("events", "tail", "model.trained.dlq")
    assert result.exit_code == 4
    assert "make up" in result.stderr


def test_a_topic_outside_the_catalogue_that_exists_is_tailed(feed: Feed) -> None:
    feed.records = [kafka_record(b'{"EventName": "s3:ObjectCreated:Put", "Key": "a/b"}', 0)]
    result = screwops("events", "tail", "it-some-test-topic", "--limit", "1")
    assert result.exit_code == 0, result.output
    assert "EventName=s3:ObjectCreated:Put Key=a/b" in result.stdout


def test_an_unreachable_broker_exits_3(feed: Feed) -> None:
    feed.error = UnavailableError("Kafka did not answer at 127.0.0.1:9092")
    result = screwops("events", "tail", "dataset.ingested")
    assert result.exit_code == 3
    assert "Kafka: UNAVAILABLE: Kafka did not answer" in result.stderr


def test_ctrl_c_exits_130(feed: Feed) -> None:
    feed.error = KeyboardInterrupt()
    result = screwops("events", "tail", "dataset.ingested")
    assert result.exit_code == 130
    assert "interrupted" in result.stderr
