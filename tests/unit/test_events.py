"""The event contracts: every event round-trips, and malformed events are refused clearly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from screwops_contracts import (
    CATALOGUE,
    EVENTS_BY_TOPIC,
    DatasetIngested,
    DatasetIngestedPayload,
    DatasetLabeled,
    DatasetLabeledPayload,
    Event,
    InspectionCompleted,
    InspectionReviewed,
    ModelRolledBack,
    ModelRolloutChangedPayload,
    Topic,
    TrainingRequested,
    all_topics,
    dlq_topic,
    parse_event,
)
from screwops_contracts.minio import BUCKET_EVENTS_TOPIC
from screwops_contracts.models import DEFAULT_THRESHOLD, ModelKind


def example(model: type[BaseModel]) -> dict[str, Any]:
    """A payload built from each field's first documented example (nested models recursively)."""
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            values[name] = example(annotation)
        elif field.examples:
            values[name] = field.examples[0]
        elif not field.is_required():
            continue
        else:
            values[name] = []
    return values


def payload_type(event: type[Event[Any]]) -> type[BaseModel]:
    annotation = event.model_fields["payload"].annotation
    assert isinstance(annotation, type)
    assert issubclass(annotation, BaseModel)
    return annotation


def ingested() -> DatasetIngested:
    return DatasetIngested.origin(
        DatasetIngestedPayload.model_validate(example(DatasetIngestedPayload)), producer="ingestion"
    )


@pytest.mark.parametrize("route", CATALOGUE, ids=lambda r: r.event.TOPIC)
def test_every_event_round_trips_through_json(route: Any) -> None:
    event_type: type[Event[Any]] = route.event
    fields = example(payload_type(event_type))
    if event_type.TOPIC in (Topic.DATASET_REJECTED, Topic.MODEL_REJECTED):
        fields["failures" if "failures" in fields else "checks"] = [
            {"name": "accuracy", "passed": False, "observed": 0.5, "expected": "> 0.95"}
        ]
    event = event_type.origin(payload_type(event_type).model_validate(fields), producer="test")
    assert event_type.model_validate_json(event.model_dump_json()) == event
    assert event.type == event_type.TOPIC == route.event.TOPIC


@pytest.mark.parametrize("route", CATALOGUE, ids=lambda r: r.event.TOPIC)
def test_every_field_is_described(route: Any) -> None:
    for model in (route.event, payload_type(route.event)):
        undocumented = [n for n, f in model.model_fields.items() if not f.description]
        assert not undocumented, f"{model.__name__} fields without description: {undocumented}"
        if model is not route.event:
            unexampled = [
                n
                for n, f in model.model_fields.items()
                if not f.examples
                and not (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel))
                and f.annotation is not list
            ]
            assert all(n in ("failures", "checks") for n in unexampled), (
                f"{model.__name__} fields without example: {unexampled}"
            )


def test_a_caused_event_inherits_the_run_and_derives_its_id_from_the_cause() -> None:
    cause = ingested()
    payload = DatasetLabeledPayload.model_validate(example(DatasetLabeledPayload))
    first = DatasetLabeled.caused_by(cause, payload, producer="labeling")
    again = DatasetLabeled.caused_by(cause, payload, producer="labeling")
    assert first.correlation_id == cause.correlation_id
    assert first.causation_id == cause.event_id
    assert first.event_id == again.event_id
    assert first.key == b"screws"


def test_origin_events_get_fresh_ids_and_start_a_run() -> None:
    a, b = ingested(), ingested()
    assert a.event_id != b.event_id
    assert a.correlation_id == str(a.event_id)
    assert a.causation_id is None


def test_a_missing_field_is_refused_naming_the_field() -> None:
    raw = json.loads(ingested().model_dump_json())
    del raw["payload"]["manifest_key"]
    with pytest.raises(ValidationError, match=r"payload\.manifest_key\s+Field required"):
        DatasetIngested.model_validate(raw)


def test_an_unknown_field_is_refused_rather_than_dropped() -> None:
    raw = json.loads(ingested().model_dump_json())
    raw["payload"]["surprise"] = 1
    with pytest.raises(ValidationError, match=r"payload\.surprise\s+Extra inputs"):
        DatasetIngested.model_validate(raw)


@pytest.mark.parametrize(
    ("event", "field", "limit"),
    [
        (ModelRolledBack, "reason", 1024),
        (ModelRolledBack, "actor", 128),
        (InspectionCompleted, "line_id", 64),
        (InspectionCompleted, "camera_id", 64),
        (InspectionReviewed, "reviewer", 128),
        (TrainingRequested, "reason", 1024),
        (DatasetIngested, "dataset_id", 64),
    ],
)
def test_free_text_past_its_limit_is_refused_naming_the_field(
    event: type[Event[Any]], field: str, limit: int
) -> None:
    fields = example(payload_type(event))
    fields[field] = "x" * (limit + 1)
    with pytest.raises(ValidationError, match=rf"{field}\s+String should have at most {limit}"):
        payload_type(event).model_validate(fields)


def test_an_event_of_another_type_is_refused() -> None:
    raw = json.loads(ingested().model_dump_json())
    raw["type"] = "model.trained"
    with pytest.raises(ValidationError, match=r"does not match event 'dataset\.ingested'"):
        DatasetIngested.model_validate(raw)


def test_an_unknown_schema_version_is_refused() -> None:
    raw = json.loads(ingested().model_dump_json())
    raw["schema_version"] = 2
    with pytest.raises(ValidationError, match="unsupported schema_version 2"):
        DatasetIngested.model_validate(raw)


def test_a_naive_timestamp_is_refused() -> None:
    raw = json.loads(ingested().model_dump_json())
    raw["occurred_at"] = "2026-11-24T10:00:00"
    with pytest.raises(ValidationError, match="occurred_at"):
        DatasetIngested.model_validate(raw)


def test_every_topic_has_one_event_and_a_dead_letter_twin() -> None:
    assert set(EVENTS_BY_TOPIC) == {t.value for t in Topic}
    topics = all_topics()
    assert len(topics) == len(set(topics)) == 2 * (len(Topic) + 1)
    assert all(dlq_topic(t) in topics for t in [*Topic, BUCKET_EVENTS_TOPIC])


@pytest.mark.parametrize("value", [b"", b"\x00\xffnot json", b'{"event_id": "x"}', b"[]"], ids=repr)
def test_a_record_that_is_no_event_parses_to_none(value: bytes) -> None:
    assert parse_event(Topic.DATASET_INGESTED, value) is None


def test_a_record_of_an_event_parses_to_it() -> None:
    event = ingested()
    assert parse_event(Topic.DATASET_INGESTED, event.model_dump_json().encode()) == event


@pytest.mark.parametrize(
    "event",
    [
        EVENTS_BY_TOPIC[Topic.MODEL_TRAINED],
        EVENTS_BY_TOPIC[Topic.MODEL_APPROVED],
        EVENTS_BY_TOPIC[Topic.MODEL_DEPLOYED],
        EVENTS_BY_TOPIC[Topic.MODEL_ROLLED_BACK],
    ],
    ids=lambda e: e.TOPIC,
)
def test_a_model_event_from_before_operating_points_parses_as_a_supervised_model_at_one_half(
    event: type[Event[Any]],
) -> None:
    """Events already on the topics (or in a dead-letter queue) name no threshold or kind."""
    raw = example(payload_type(event))
    del raw["threshold"], raw["model_kind"]
    payload = payload_type(event).model_validate(raw)
    assert payload.model_dump()["threshold"] == DEFAULT_THRESHOLD
    assert payload.model_dump()["model_kind"] is ModelKind.SUPERVISED


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"step": 3}, "step 3 is past the 3 steps"),
        ({"strategy": "shadow"}, "a shadow rollout has one step"),
        ({"steps": [5.0, 0.0, 100.0]}, "every step's share is above 0"),
    ],
)
def test_a_rollout_change_no_registry_would_make_is_refused(
    change: dict[str, Any], message: str
) -> None:
    fields = example(ModelRolloutChangedPayload) | change
    with pytest.raises(ValidationError, match=message):
        ModelRolloutChangedPayload.model_validate(fields)
