"""Training run records: the trainer writes them to MongoDB, the console and ``screwops runs``
read them.

The trainer has no API for its runs, so its collection :data:`RUNS` is the interface, and these
models are its one schema: the trainer validates what it writes against them (unknown fields
refused), readers parse what they find with :func:`run_record` (unknown fields ignored, so a
trainer that records more never breaks an older reader).

A run's ``_id`` is its run id (derived from the model name, the data's digest and the params), so
training the same thing again finds the same record. The record is written when a run starts
(status ``running``), gets each epoch's metrics as training goes, and is completed once the
artifacts are stored (``finished``) or the run failed (``failed``). ``attempts`` counts starts:
each start claims its attempt's number (a fenced claim, ``screwops_storage.claims``: the next
number, ``claimed_at`` and ``heartbeat_at``, which the running attempt renews) and writes its
artifacts under that attempt's prefix. A run left ``running`` by a trainer that is gone (no
renewal for three heartbeats) or that ran past the run limit is taken over by a new attempt, and
only the latest attempt writes epochs or completes the record, which then names its artifacts
and no other attempt's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from screwops_contracts.models import NO_FRAME_SIZE, ModelKind, run_prefix, saved_model_prefix

RUNS = "training_runs"

RunStatus = Literal["running", "finished", "failed"]


def _utc(value: datetime) -> datetime:
    # MongoDB stores UTC; a client without tz_aware hands it back naive.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Record(BaseModel):
    """Base of records stored in MongoDB under their own key: unknown fields refused, datetimes
    always aware, whichever client read them back."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        return _utc(value) if isinstance(value, datetime) else value

    def document(self) -> dict[str, Any]:
        """The MongoDB document: the record's fields, its id as ``_id``."""
        return {"_id": self.key, **self.model_dump(mode="python")}

    @property
    def key(self) -> str:
        raise NotImplementedError


class EpochRecord(BaseModel):
    """One finished epoch: its number (from 1), Keras' metrics and when it ended."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1)
    metrics: dict[str, float]
    ended_at: datetime

    @field_validator("ended_at", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        return _utc(value) if isinstance(value, datetime) else value


class RunRecord(Record):
    """One training run: what it was fed and with what, how it went, and where its model is."""

    run_id: str
    model_name: str
    status: RunStatus
    params: dict[str, Any] = Field(description="TrainingParams, as JSON.")
    seed: int
    git_sha: str
    packages: dict[str, str]
    dataset_id: str
    dataset_version: int
    dataset_digest: str
    split_key: str
    split_counts: dict[str, int]
    cause_event_id: str = Field(description="The event that started the latest attempt.")
    correlation_id: str
    attempts: int = Field(0, ge=0)
    epochs: list[EpochRecord] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    best_epoch: int | None = None
    training_seconds: float | None = None
    model_kind: ModelKind = ModelKind.SUPERVISED
    threshold: float | None = Field(
        None,
        description="The decision threshold chosen on the validation split once the model was "
        "exported; None until then (and for runs recorded before thresholds were chosen).",
    )
    frame_size: int = Field(
        NO_FRAME_SIZE,
        ge=0,
        description="The side of the square frame the exported model takes; 0 for runs "
        "recorded before models took full frames (such a model must be retrained to be served).",
    )
    artifact_key: str
    history_key: str
    record_key: str
    error: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    claimed_at: datetime | None = Field(
        None, description="When the latest attempt was claimed (None: recorded before claims)."
    )
    heartbeat_at: datetime | None = Field(
        None, description="When the latest attempt's trainer last said it was alive."
    )

    @property
    def key(self) -> str:
        return self.run_id

    @property
    def planned_epochs(self) -> int | None:
        """The epochs the run's params allow (early stopping may end it sooner), if they say."""
        planned = self.params.get("epochs")
        return planned if isinstance(planned, int) and planned > 0 else None

    @staticmethod
    def keys(run: str, attempt: int | None = None) -> dict[str, str]:
        """Where a run's artifacts go in the models bucket: fixed by its id and the attempt
        that writes them (see :func:`~screwops_contracts.models.run_prefix`)."""
        return {
            "artifact_key": saved_model_prefix(run, attempt),
            "history_key": f"{run_prefix(run, attempt)}/history.json",
            "record_key": f"{run_prefix(run, attempt)}/run.json",
        }


def run_record(document: Mapping[str, Any]) -> RunRecord:
    """A run as a reader finds it in :data:`RUNS`: its ``_id`` and any field this contract does
    not know are ignored, so a newer trainer's records still read.

    Raises:
        pydantic.ValidationError: the document lacks a field of the contract or holds a bad value.
    """
    return RunRecord.model_validate(document, extra="ignore")


__all__ = [
    "RUNS",
    "EpochRecord",
    "Record",
    "RunRecord",
    "RunStatus",
    "run_record",
]
