"""``screwops dlq`` over dead letters held in memory: the list, what replay is asked to do,
and the errors that say which topic or event is missing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from screwops_bus import DeadLetterRecord, Replayed
from screwops_bus.replay import UnknownTopicError
from screwops_cli import dlq
from screwops_contracts import all_topics
from screwops_errors import NotFoundError
from screwops_settings import StackSettings

from tests.support import dataset_ingested
from tests.unit.cli.support import screwops
from tests.unit.test_replay import letter


@dataclass
class FakeBroker:
    letters: list[DeadLetterRecord] = field(default_factory=list)
    reads: list[dict[str, Any]] = field(default_factory=list)
    replays: list[dict[str, Any]] = field(default_factory=list)

    async def read(
        self, servers: str, topics: Sequence[str], newest: int | None
    ) -> list[DeadLetterRecord]:
        self.reads.append({"topics": list(topics), "newest": newest})
        missing = [t for t in topics if t.startswith("nope")]
        if missing:
            raise UnknownTopicError(f"no such topic on the broker: {', '.join(missing)}")
        return [r for r in self.letters if r.topic in topics]

    async def replay(
        self, settings: StackSettings, topic: str, event_ids: Sequence[str] | None
    ) -> list[Replayed]:
        self.replays.append({"topic": topic, "event_ids": event_ids})
        if topic.startswith("it-gone"):
            raise UnknownTopicError(f"no such topic on the broker: {topic}")
        chosen = [r for r in self.letters if r.topic == topic]
        if event_ids is not None:
            chosen = [r for r in chosen if r.identity in event_ids]
            if len(chosen) < len(event_ids):
                raise NotFoundError(f"{topic} holds no dead letter of {', '.join(event_ids)}")
        return [Replayed(r, r.original_topic, 0, 40 + n) for n, r in enumerate(chosen)]


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    fake = FakeBroker()
    monkeypatch.setattr(dlq, "read_letters", fake.read)
    monkeypatch.setattr(dlq, "replay_letters", fake.replay)
    return fake


def test_list_shows_why_each_message_failed(broker: FakeBroker) -> None:
    event = dataset_ingested("screws")
    broker.letters = [letter(event.model_dump_json().encode(), offset=3), letter(b"\x89PNG")]

    table = screwops("dlq", "list", "dataset.ingested")
    as_json = screwops("dlq", "list", "dataset.ingested.dlq", "--limit", "5", "--json")

    assert table.exit_code == 0, table.output
    assert str(event.event_id) in table.stdout
    assert "(no event_id)" in table.stdout
    assert "handler failed" in table.stdout
    assert "2 dead letters in dataset.ingested.dlq" in table.stdout
    rows = json.loads(as_json.stdout)
    assert rows[0]["event_id"] == str(event.event_id)
    assert (rows[0]["original_topic"], rows[0]["original_offset"]) == ("dataset.ingested", 3)
    assert rows[0]["consumer"] == "labeling"
    assert rows[1]["value"] == "\ufffdPNG"
    assert broker.reads[-1] == {"topics": ["dataset.ingested.dlq"], "newest": 5}


def test_list_without_a_topic_reads_every_dlq_of_the_catalogue(broker: FakeBroker) -> None:
    result = screwops("dlq", "list")
    assert result.exit_code == 0, result.output
    dlqs = [t for t in all_topics() if t.endswith(".dlq")]
    assert broker.reads[0]["topics"] == dlqs
    assert f"0 dead letters in {len(dlqs)} dead-letter topics" in result.stdout


def test_list_of_an_unknown_topic_names_the_catalogues_dlqs(broker: FakeBroker) -> None:
    result = screwops("dlq", "list", "nope")
    assert result.exit_code == 2
    assert "unknown dead-letter topic 'nope.dlq'" in result.stderr
    assert "dataset.ingested.dlq" in result.stderr


def test_replay_needs_event_ids_or_all(broker: FakeBroker) -> None:
    neither = screwops("dlq", "replay", "dataset.ingested.dlq")
    both = screwops("dlq", "replay", "dataset.ingested.dlq", "--all", "--event-id", "x")
    assert (neither.exit_code, both.exit_code) == (2, 2)
    assert "--event-id ID (repeatable) or --all" in neither.stderr
    assert broker.replays == []


def test_replay_all_and_by_event_id(broker: FakeBroker) -> None:
    one, two = dataset_ingested("screws"), dataset_ingested("screws")
    broker.letters = [
        letter(one.model_dump_json().encode(), offset=0),
        letter(two.model_dump_json().encode(), offset=1),
    ]

    everything = screwops("dlq", "replay", "dataset.ingested.dlq", "--all")
    chosen = screwops(
        "dlq", "replay", "dataset.ingested", "--event-id", str(two.event_id), "--json"
    )

    assert everything.exit_code == 0, everything.output
    assert "replayed 2 message(s)" in everything.stdout
    assert "dataset.ingested@0:40" in everything.stdout
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(chosen.stdout) == [
        {
            "event_id": str(two.event_id),
            "identity": str(two.event_id),
            "from": "dataset.ingested.dlq@0:1",
            "topic": "dataset.ingested",
            "partition": 0,
            "offset": 40,
        }
    ]
    assert broker.replays == [
        {"topic": "dataset.ingested.dlq", "event_ids": None},
        {"topic": "dataset.ingested.dlq", "event_ids": [str(two.event_id)]},
    ]


def test_replay_of_an_empty_dlq_says_so(broker: FakeBroker) -> None:
    result = screwops("dlq", "replay", "model.trained.dlq", "--all")
    assert result.exit_code == 0, result.output
    assert "nothing to replay: model.trained.dlq is empty" in result.stdout


def test_replay_of_an_event_that_is_not_there_exits_4(broker: FakeBroker) -> None:
    result = screwops("dlq", "replay", "dataset.ingested.dlq", "--event-id", "missing")
    assert result.exit_code == 4
    assert "holds no dead letter of missing" in result.stderr


def test_replay_of_a_topic_that_is_not_there_exits_2(broker: FakeBroker) -> None:
    result = screwops("dlq", "replay", "it-gone.dlq", "--all")
    assert result.exit_code == 2
    assert "unknown dead-letter topic 'it-gone.dlq'" in result.stderr
