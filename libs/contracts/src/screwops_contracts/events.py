"""The event catalogue: one topic per event type, its payload, its producer and its consumers.

Read top to bottom this is the pipeline: images are ingested, labeled, validated, trained on,
evaluated, registered and deployed; the gateway reports every inspection; the monitor asks for
retraining. ``docs/events.md`` explains it for newcomers; ``docs/asyncapi.yaml`` is generated
from these models (``make asyncapi``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, Field, ValidationError, model_validator

from screwops_contracts.envelope import Event, Payload
from screwops_contracts.limits import (
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_REASON_CHARS,
)
from screwops_contracts.minio import BUCKET_EVENTS_TOPIC
from screwops_contracts.models import DEFAULT_THRESHOLD, NO_FRAME_SIZE, ModelKind

DLQ_SUFFIX = ".dlq"


class Topic(StrEnum):
    """Every topic of the catalogue. Each one has a dead-letter twin, ``<topic>.dlq``."""

    DATASET_INGESTED = "dataset.ingested"
    DATASET_LABELED = "dataset.labeled"
    DATASET_VALIDATED = "dataset.validated"
    DATASET_REJECTED = "dataset.rejected"
    MODEL_TRAINED = "model.trained"
    MODEL_APPROVED = "model.approved"
    MODEL_REJECTED = "model.rejected"
    MODEL_DEPLOYED = "model.deployed"
    MODEL_ROLLED_BACK = "model.rolled_back"
    MODEL_RELEASED = "model.released"
    MODEL_ALIAS_MOVED = "model.alias_moved"
    MODEL_ROLLOUT_CHANGED = "model.rollout_changed"
    INSPECTION_COMPLETED = "inspection.completed"
    INSPECTION_REVIEWED = "inspection.reviewed"
    MODEL_DEGRADED = "model.degraded"
    TRAINING_REQUESTED = "training.requested"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic where messages of ``topic`` that cannot be processed are kept."""
    return f"{topic}{DLQ_SUFFIX}"


# --- shared field types ------------------------------------------------------------------------

DatasetId = Annotated[
    str,
    Field(description="Dataset (aggregate) id.", examples=["screws"], max_length=MAX_ID_CHARS),
]
DatasetVersion = Annotated[
    int, Field(description="Immutable version of the dataset, from 1.", examples=[3], ge=1)
]
ModelName = Annotated[
    str,
    Field(
        description="Registered model name.",
        examples=["screw-classifier"],
        max_length=MAX_NAME_CHARS,
    ),
]
RunId = Annotated[
    str,
    Field(description="Training run id.", examples=["run-5f2c9a1e"], max_length=MAX_NAME_CHARS),
]
# Free text a person or client chose: the limits of screwops_contracts.limits, which the gRPC
# APIs enforce, so an event breaking one was not made by this system and is dead-lettered.
Who = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
Why = Annotated[str, Field(max_length=MAX_REASON_CHARS)]
LineId = Annotated[
    str, Field(description="Production line.", examples=["line-2"], max_length=MAX_ID_CHARS)
]
# A model's operating point travels with it from the trainer to the gateway. Each use defaults
# them, so an event written before they existed still parses: such a model was judged and served
# at 0.5, and only supervised models existed.
Threshold = Annotated[
    float,
    Field(
        ge=0.0,
        le=1.0,
        description="Decision threshold chosen on the validation split: a score at or above it "
        "is a defect.",
        examples=[0.37],
    ),
]
Kind = Annotated[
    ModelKind,
    Field(
        description="How the model learnt defects: a supervised classifier or a good-only "
        "anomaly detector; both score each image in [0, 1].",
        examples=["supervised"],
    ),
]
FrameSize = Annotated[
    int,
    Field(
        ge=0,
        description="The side in pixels of the square grey frame the model takes (its input is "
        "the decoded full frame, fitted to this size). 0 for a model exported before models took "
        "full frames: it must be retrained to be served.",
        examples=[1024],
    ),
]
# Alias moves are ordered by the registry, not by clocks: a producer's occurred_at can be late,
# early or forged. 0 in events written before the registry numbered its moves.
AliasSequence = Annotated[
    int,
    Field(
        ge=0,
        description="The move's number, issued by the registry and increasing with every move "
        "of the model's `production` alias; a gateway applies a move only when it is higher than "
        "the one it serves. 0 in events from before moves were numbered.",
        examples=[7],
    ),
]


class SplitCounts(Payload):
    """Images per split of a dataset version."""

    train: int = Field(description="Images in the training split.", examples=[420], ge=0)
    validation: int = Field(description="Images in the validation split.", examples=[90], ge=0)
    test: int = Field(description="Images in the test split.", examples=[90], ge=0)


class AssertionResult(Payload):
    """One data or model check, with the numbers that decided it."""

    name: str = Field(description="Check name.", examples=["min_images_per_class"])
    passed: bool = Field(description="Whether the check passed.", examples=[False])
    observed: float | None = Field(
        default=None, description="Measured value, where numeric.", examples=[12]
    )
    expected: str = Field(
        default="", description="The threshold or rule, readable.", examples=[">= 20 per class"]
    )
    message: str = Field(
        default="", description="What failed, for a person.", examples=["class 'bad' has 12"]
    )


# --- data plane --------------------------------------------------------------------------------


class DatasetIngestedPayload(Payload):
    """A new immutable dataset version and what happened to each file offered."""

    dataset_id: DatasetId
    version: DatasetVersion
    manifest_key: str = Field(
        description="MinIO key (bucket 'datasets') of the version's manifest: images and digests.",
        examples=["screws/v3/manifest.json"],
    )
    image_count: int = Field(description="Images in this version.", examples=[600], ge=0)
    labeled_by_layout: int = Field(
        description="Images whose label came from the import layout (provenance 'import').",
        examples=[600],
        ge=0,
    )
    refused_count: int = Field(
        description="Files refused (corrupt, unsupported, oversized).", examples=[2], ge=0
    )
    duplicate_count: int = Field(description="Files skipped as already known.", examples=[0], ge=0)
    source: Literal["upload", "import", "bucket"] = Field(
        description="Entry point the images came through.", examples=["import"]
    )


class DatasetIngested(Event[DatasetIngestedPayload]):
    """Ingestion grouped new images into an immutable dataset version."""

    TOPIC = Topic.DATASET_INGESTED
    key_field = "dataset_id"


class DatasetLabeledPayload(Payload):
    """A dataset version whose labels are complete."""

    dataset_id: DatasetId
    version: DatasetVersion
    labels_key: str = Field(
        description="MinIO key (bucket 'datasets') of the version's labels.",
        examples=["screws/v3/labels.json"],
    )
    label_counts: dict[str, int] = Field(
        description="Images per label.", examples=[{"good": 300, "bad": 300}]
    )
    excluded_count: int = Field(
        description="Unlabeled images excluded when an operator closed the version.",
        examples=[0],
        ge=0,
    )
    closed_by: Who | None = Field(
        default=None,
        description="Operator who closed the version early; null when every image was labeled.",
        examples=[None],
    )


class DatasetLabeled(Event[DatasetLabeledPayload]):
    """Every image of a version has a label (or the rest were excluded by an operator)."""

    TOPIC = Topic.DATASET_LABELED
    key_field = "dataset_id"


class DatasetValidatedPayload(Payload):
    """A dataset version that passed validation, with its split and reports."""

    dataset_id: DatasetId
    version: DatasetVersion
    dataset_digest: str = Field(
        description="sha256 over images, labels and split: what a training run was fed.",
        examples=["9f2c…e1"],
    )
    split_key: str = Field(
        description="MinIO key of the deterministic stratified split, the recorded attempt's "
        "(a copy is at <dataset>/v<N>/split.json).",
        examples=["screws/v3/validation/attempts/1/split.json"],
    )
    split_counts: SplitCounts = Field(description="Images per split.")
    report_key: str = Field(
        description="MinIO key of the JSON validation report, the recorded attempt's.",
        examples=["screws/v3/validation/attempts/1/report.json"],
    )
    report_html_key: str = Field(
        description="MinIO key of the self-contained HTML report, the recorded attempt's.",
        examples=["screws/v3/validation/attempts/1/report.html"],
    )


class DatasetValidated(Event[DatasetValidatedPayload]):
    """The version passed every data assertion and has its split: it may be trained on."""

    TOPIC = Topic.DATASET_VALIDATED
    key_field = "dataset_id"


class DatasetRejectedPayload(Payload):
    """A dataset version that failed validation, with each failed assertion."""

    dataset_id: DatasetId
    version: DatasetVersion
    failures: list[AssertionResult] = Field(
        description="Each failed assertion with its numbers.", min_length=1
    )
    report_key: str = Field(
        description="MinIO key of the JSON validation report, the recorded attempt's.",
        examples=["screws/v3/validation/attempts/1/report.json"],
    )


class DatasetRejected(Event[DatasetRejectedPayload]):
    """The version failed data assertions; nothing trains on it."""

    TOPIC = Topic.DATASET_REJECTED
    key_field = "dataset_id"


# --- model plane -------------------------------------------------------------------------------


class ModelTrainedPayload(Payload):
    """A finished training run and where its model is."""

    model_name: ModelName
    run_id: RunId
    dataset_id: DatasetId
    dataset_version: DatasetVersion
    dataset_digest: str = Field(description="Digest of the data trained on.", examples=["9f2c…e1"])
    artifact_key: str = Field(
        description="MinIO prefix (bucket 'models') of the SavedModel.",
        examples=["screw-classifier/run-5f2c9a1e/saved_model"],
    )
    metrics: dict[str, float] = Field(
        description="Final training and validation metrics.",
        examples=[{"val_accuracy": 0.985, "val_loss": 0.05}],
    )
    reused: bool = Field(
        default=False,
        description="True when a finished run with the same data and params was reused.",
        examples=[False],
    )
    threshold: Threshold = DEFAULT_THRESHOLD
    model_kind: Kind = ModelKind.SUPERVISED
    frame_size: FrameSize = NO_FRAME_SIZE


class ModelTrained(Event[ModelTrainedPayload]):
    """A training run finished and its SavedModel is stored."""

    TOPIC = Topic.MODEL_TRAINED
    key_field = "model_name"


class ModelApprovedPayload(Payload):
    """A candidate that passed the gate, with the numbers that passed it."""

    model_name: ModelName
    run_id: RunId
    evaluation_id: str = Field(description="Evaluation record id.", examples=["eval-5f2c9a1e"])
    dataset_id: DatasetId
    dataset_version: DatasetVersion
    artifact_key: str = Field(
        description="MinIO prefix of the approved SavedModel.",
        examples=["screw-classifier/run-5f2c9a1e/saved_model"],
    )
    metrics: dict[str, float] = Field(
        description="Test-split metrics.", examples=[{"accuracy": 0.98, "recall": 0.97}]
    )
    checks: list[AssertionResult] = Field(description="Every gate check with its numbers.")
    champion_version: int | None = Field(
        description="Production version compared against; null for the first model.",
        examples=[None],
    )
    report_key: str = Field(
        description="MinIO key of the evaluation report.",
        examples=["screw-classifier/run-5f2c9a1e/evaluation.json"],
    )
    threshold: Threshold = DEFAULT_THRESHOLD
    model_kind: Kind = ModelKind.SUPERVISED
    frame_size: FrameSize = NO_FRAME_SIZE


class ModelApproved(Event[ModelApprovedPayload]):
    """The candidate passed the gate and Triton's infra validation; the registry deploys it."""

    TOPIC = Topic.MODEL_APPROVED
    key_field = "model_name"


class ModelRejectedPayload(Payload):
    """A candidate that failed the gate, with each reason in numbers."""

    model_name: ModelName
    run_id: RunId
    evaluation_id: str = Field(description="Evaluation record id.", examples=["eval-5f2c9a1e"])
    metrics: dict[str, float] = Field(
        description="Test-split metrics.", examples=[{"accuracy": 0.51}]
    )
    checks: list[AssertionResult] = Field(
        description="Every gate check; at least one failed.", min_length=1
    )
    report_key: str = Field(
        description="MinIO key of the evaluation report.",
        examples=["screw-classifier/run-5f2c9a1e/evaluation.json"],
    )


class ModelRejected(Event[ModelRejectedPayload]):
    """The candidate failed the gate; it never reaches Triton."""

    TOPIC = Topic.MODEL_REJECTED
    key_field = "model_name"


class ModelDeployedPayload(Payload):
    """The version now behind the `production` alias."""

    model_name: ModelName
    version: int = Field(description="Registered version now serving.", examples=[4], ge=1)
    previous_version: int | None = Field(
        description="Version that served before; null for the first deployment.", examples=[3]
    )
    triton_model: str = Field(
        description="Model name in Triton's repository.", examples=["screw-classifier"]
    )
    run_id: RunId
    threshold: Threshold = DEFAULT_THRESHOLD
    model_kind: Kind = ModelKind.SUPERVISED
    frame_size: FrameSize = NO_FRAME_SIZE
    sequence: AliasSequence = 0


class ModelDeployed(Event[ModelDeployedPayload]):
    """A version is loaded in Triton, checked with a real inference, and is now `production`."""

    TOPIC = Topic.MODEL_DEPLOYED
    key_field = "model_name"


class ModelRolledBackPayload(Payload):
    """A rollback of the `production` alias: from, to, who and why."""

    model_name: ModelName
    from_version: int = Field(description="Version taken out of production.", examples=[4], ge=1)
    to_version: int = Field(description="Version serving again.", examples=[3], ge=1)
    triton_model: str = Field(
        description="Model name in Triton's repository.", examples=["screw-classifier"]
    )
    actor: Who = Field(description="Who asked for the rollback.", examples=["ana@plant-7"])
    reason: Why = Field(description="Why.", examples=["false rejects on line 2"])
    threshold: Threshold = Field(
        DEFAULT_THRESHOLD,
        description="The threshold of the version serving again, which the gateway applies.",
    )
    model_kind: Kind = Field(
        ModelKind.SUPERVISED, description="The kind of the version serving again."
    )
    frame_size: FrameSize = NO_FRAME_SIZE
    sequence: AliasSequence = 0


class ModelRolledBack(Event[ModelRolledBackPayload]):
    """The `production` alias moved back to the previous version."""

    TOPIC = Topic.MODEL_ROLLED_BACK
    key_field = "model_name"


class ModelReleasedPayload(Payload):
    """An operator's release of the `candidate` version: it is deployed next."""

    model_name: ModelName
    version: int = Field(description="The released version.", examples=[4], ge=1)
    run_id: RunId
    evaluation_id: str = Field(
        description="The evaluation that approved it.", examples=["eval-7"], max_length=MAX_ID_CHARS
    )
    actor: Who = Field(description="Who released it.", examples=["ana@plant-7"])
    reason: Why = Field(description="Why.", examples=["reviewed the report with QA"])
    sequence: int = Field(
        ge=1,
        description="The number of the `candidate` alias's move that the release made.",
        examples=[3],
    )


class ModelReleased(Event[ModelReleasedPayload]):
    """An operator released the version the evaluator approved (manual release policy); its
    deployment follows as `model.deployed`. "Approved" is the evaluator's word, "released" the
    operator's."""

    TOPIC = Topic.MODEL_RELEASED
    key_field = "model_name"


class ModelAliasMovedPayload(Payload):
    """A move of an alias other than `production` (`candidate` or one an operator named)."""

    model_name: ModelName
    alias: str = Field(
        description="The alias that moved.", examples=["candidate"], max_length=MAX_ID_CHARS
    )
    from_version: int | None = Field(
        description="The version it named before; null when it named none.", examples=[3]
    )
    to_version: int | None = Field(
        description="The version it names now; null when it was unset.", examples=[4]
    )
    kind: Literal["set", "unset", "nominate", "release", "refuse"] = Field(
        description="What moved it: an operator setting or unsetting it, an approval nominating "
        "a candidate (manual release policy), or an operator releasing or refusing the "
        "candidate (which clears it).",
        examples=["set"],
    )
    actor: Who = Field(description="Who moved it.", examples=["ana@plant-7"])
    reason: Why = Field(description="Why.", examples=["pinned for the audit"])
    sequence: int = Field(
        ge=1, description="The alias's move number, one more per move.", examples=[2]
    )


class ModelAliasMoved(Event[ModelAliasMovedPayload]):
    """An alias other than `production` moved; `production`'s moves are `model.deployed` and
    `model.rolled_back`, which the gateways act on."""

    TOPIC = Topic.MODEL_ALIAS_MOVED
    key_field = "model_name"


class ServedVersion(Payload):
    """One version a rollout serves, with what a gateway needs to score and judge with it."""

    version: int = Field(description="Registered version.", examples=[4], ge=1)
    triton_model: str = Field(
        description="Model name in Triton's repository that serves this version.",
        examples=["screw-classifier"],
    )
    threshold: Threshold
    model_kind: Kind
    frame_size: FrameSize


class ModelRolloutChangedPayload(Payload):
    """A rollout's state after one change: the two versions, the steps and the share now sent
    to the candidate."""

    model_name: ModelName
    rollout_id: str = Field(
        description="The rollout's id, the same in every change of one rollout.",
        examples=["ro-5f2c9a1e"],
        max_length=MAX_ID_CHARS,
    )
    change: Literal["started", "advanced", "paused", "resumed", "completed", "aborted"] = Field(
        description="What changed: the rollout started, went to its next step, was paused or "
        "resumed, completed (production moved to the candidate just before, as "
        "`model.deployed`) or was aborted (production stays).",
        examples=["advanced"],
    )
    state: Literal["running", "paused", "completed", "aborted"] = Field(
        description="The rollout's state after the change.", examples=["running"]
    )
    strategy: Literal["canary", "shadow"] = Field(
        description="canary: `share` percent of the requests are answered by the candidate; "
        "shadow: `share` percent are also sent to the candidate off the response path, its "
        "answers discarded. (`immediate` is a plain `model.deployed`, no rollout.)",
        examples=["canary"],
    )
    production: ServedVersion = Field(
        description="The version `production` named when the rollout started: it answers the "
        "requests the candidate does not (for `completed`, the version the candidate replaced)."
    )
    candidate: ServedVersion = Field(description="The version being rolled out.")
    steps: list[float] = Field(
        description="The candidate's traffic share at each step, in percent; a shadow has one "
        "step, its shadow share.",
        examples=[[5.0, 25.0, 100.0]],
        min_length=1,
    )
    step: int = Field(description="Index in `steps` of the current step.", examples=[1], ge=0)
    share: float = Field(
        description="Percent of requests routed (canary) or mirrored (shadow) to the candidate "
        "now: `steps[step]` while running, 0 when paused, completed or aborted.",
        examples=[25.0],
        ge=0.0,
        le=100.0,
    )
    lines: list[LineId] = Field(
        description="The lines the rollout applies to; empty for every line.",
        examples=[["line-2"]],
    )
    min_inspections: int = Field(
        description="Inspections the candidate must answer at each step before it may advance.",
        examples=[500],
        ge=0,
    )
    min_step_seconds: float = Field(
        description="Seconds each step lasts at least before it may advance.",
        examples=[600.0],
        ge=0.0,
    )
    actor: Who = Field(
        description="Who made the change (a principal, or the registry for an automatic one).",
        examples=["ana@plant-7"],
    )
    reason: Why = Field(description="Why.", examples=["5 % step passed its checks"])
    sequence: AliasSequence = Field(
        description="The change's number from the same per-model counter as the `production` "
        "alias's moves (`model.deployed`, `model.rolled_back`): a gateway orders rollout "
        "changes and production moves by it and ignores anything not newer than what it "
        "applied.",
        examples=[8],
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # A gateway routes from these numbers alone: a step past the list, a shadow of several
        # steps or a share above 100 % was not made by the registry and is dead-lettered.
        if self.step >= len(self.steps):
            raise ValueError(f"step {self.step} is past the {len(self.steps)} steps")
        if self.strategy == "shadow" and len(self.steps) != 1:
            raise ValueError("a shadow rollout has one step, its shadow share")
        if any(not 0.0 < s <= 100.0 for s in self.steps):
            raise ValueError("every step's share is above 0 and at most 100 percent")
        return self


class ModelRolloutChanged(Event[ModelRolloutChangedPayload]):
    """A canary or shadow rollout started, advanced, paused, resumed, completed or was aborted;
    gateways route by it (deterministically from the request id), ordered with `production`'s
    moves by `sequence`."""

    TOPIC = Topic.MODEL_ROLLOUT_CHANGED
    key_field = "model_name"


# --- serving and monitoring --------------------------------------------------------------------


class InspectionCompletedPayload(Payload):
    """One answered inspection: the prediction log's record."""

    request_id: Who = Field(description="Gateway request id.", examples=["req-7c1e"])
    line_id: LineId
    camera_id: str = Field(
        description="Camera on the line.", examples=["cam-4"], max_length=MAX_ID_CHARS
    )
    client_identity: str | None = Field(
        default=None,
        description="Subject CN of the client certificate the gateway verified the caller's "
        "connection with (mutual TLS, a production line's camera); null without one.",
        examples=["line-3-cam-4"],
        max_length=MAX_ID_CHARS,
    )
    verdict: Literal["GOOD", "DEFECT"] = Field(description="Verdict returned.", examples=["GOOD"])
    defect_probability: float = Field(
        description="Model score for 'defect'.", examples=[0.03], ge=0.0, le=1.0
    )
    threshold: float = Field(description="Decision threshold used.", examples=[0.5])
    model_name: ModelName
    model_version: int = Field(description="Version that answered.", examples=[4], ge=1)
    trace_id: str = Field(description="W3C trace id of the request.", examples=["4bf92f35…"])
    image_key: str | None = Field(
        default=None,
        description="MinIO key of the stored image (sampled or low confidence), else null.",
        examples=["inspections/ab/ab12…"],
    )
    latency_ms: float = Field(description="Gateway time for the request.", examples=[6.4])
    rollout_id: str | None = Field(
        default=None,
        description="The rollout the request took part in (on either side); null outside any.",
        examples=["ro-5f2c9a1e"],
        max_length=MAX_ID_CHARS,
    )
    role: Literal["production", "canary"] | None = Field(
        default=None,
        description="Which side of the rollout answered: production, or the canary; null "
        "outside any rollout.",
        examples=["canary"],
    )
    reference_version: int | None = Field(
        default=None,
        description="The version that also scored the image off the response path (production "
        "beside a canary, the candidate beside production in a shadow rollout); null when none "
        "did or its score was not computed.",
        examples=[3],
        ge=1,
    )
    reference_probability: float | None = Field(
        default=None,
        description="That version's defect probability for the image.",
        examples=[0.05],
        ge=0.0,
        le=1.0,
    )


class InspectionCompleted(Event[InspectionCompletedPayload]):
    """The gateway answered an inspection (the prediction log)."""

    TOPIC = Topic.INSPECTION_COMPLETED
    key_field = "line_id"


class InspectionReviewedPayload(Payload):
    """A person's ground truth for an inspection from the review queue."""

    inspection_id: str = Field(
        description="event_id of the inspection.completed reviewed.",
        examples=["0b8f3f52-5c0e-4d1e-9a57-5d9f5a3b2c11"],
    )
    line_id: LineId
    model_name: ModelName
    model_version: int = Field(description="Version that answered.", examples=[4], ge=1)
    verdict: Literal["GOOD", "DEFECT"] = Field(
        description="What the model said.", examples=["GOOD"]
    )
    defect_probability: float = Field(
        description="The model's score.", examples=[0.48], ge=0.0, le=1.0
    )
    label: Literal["good", "bad"] = Field(description="What the reviewer saw.", examples=["bad"])
    defect_type: str | None = Field(
        default=None,
        description="Defect type the reviewer named.",
        examples=["scratch_head"],
        max_length=MAX_ID_CHARS,
    )
    verdict_correct: bool = Field(description="Whether the model was right.", examples=[False])
    reviewer: Who = Field(description="Who reviewed.", examples=["ana@plant-7"])
    reviewed_at: AwareDatetime = Field(
        description="When the review was made.", examples=["2026-11-24T10:20:00Z"]
    )


class InspectionReviewed(Event[InspectionReviewedPayload]):
    """A reviewed inspection: ground truth for the monitor's rolling accuracy."""

    TOPIC = Topic.INSPECTION_REVIEWED
    key_field = "line_id"


class ModelDegradedPayload(Payload):
    """A monitoring signal that crossed its threshold."""

    model_name: ModelName
    model_version: int = Field(description="Version being watched.", examples=[4], ge=1)
    signal: Literal["score_drift", "accuracy", "defect_rate"] = Field(
        description="Which signal crossed its threshold.", examples=["score_drift"]
    )
    value: float = Field(description="The signal's value.", examples=[0.31])
    threshold: float = Field(description="The threshold it crossed.", examples=[0.2])
    window: int = Field(description="Observations in the window.", examples=[500], ge=1)


class ModelDegraded(Event[ModelDegradedPayload]):
    """The monitor saw the serving model degrade."""

    TOPIC = Topic.MODEL_DEGRADED
    key_field = "model_name"


class TrainingRequestedPayload(Payload):
    """A request for a new training run and its reason."""

    model_name: ModelName
    dataset_id: DatasetId
    dataset_version: int | None = Field(
        default=None,
        description="Version to train on; null means the newest validated one.",
        examples=[None],
    )
    degraded_version: int | None = Field(
        default=None,
        ge=1,
        description="The production version whose degradation prompted the request: the "
        "reviews of its inspections are the new data labeling adds. Null when an operator asks "
        "(every reviewed inspection the dataset lacks is added).",
        examples=[4],
    )
    reason: Why = Field(description="Why training was asked for.", examples=["score_drift 0.31"])
    requested_by: Who = Field(description="Service or person.", examples=["monitor"])


class TrainingRequested(Event[TrainingRequestedPayload]):
    """Someone (the monitor, an operator) asks for a new training run."""

    TOPIC = Topic.TRAINING_REQUESTED
    key_field = "model_name"


# --- the catalogue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """Who emits an event and who consumes it (the table in DESIGN.md)."""

    event: type[Event[Any]]
    producer: str
    consumers: tuple[str, ...]


CATALOGUE: tuple[Route, ...] = (
    Route(DatasetIngested, "ingestion", ("labeling",)),
    Route(DatasetLabeled, "labeling", ("validation",)),
    Route(DatasetValidated, "validation", ("trainer",)),
    Route(DatasetRejected, "validation", ("trainer",)),
    Route(ModelTrained, "trainer", ("evaluator",)),
    Route(ModelApproved, "evaluator", ("registry",)),
    Route(ModelRejected, "evaluator", ("registry",)),
    Route(ModelDeployed, "registry", ("gateway", "monitor", "evaluator")),
    Route(ModelRolledBack, "registry", ("gateway", "monitor", "evaluator")),
    # Audit and the console's pipeline page read them (the operator principal reads every topic);
    # no service acts on them.
    Route(ModelReleased, "registry", ()),
    Route(ModelAliasMoved, "registry", ()),
    Route(ModelRolloutChanged, "registry", ("gateway", "monitor")),
    Route(InspectionCompleted, "gateway", ("monitor", "labeling")),
    Route(InspectionReviewed, "labeling", ("monitor",)),
    Route(ModelDegraded, "monitor", ("trainer",)),
    Route(TrainingRequested, "monitor", ("trainer", "labeling")),
)

EVENTS_BY_TOPIC: dict[str, type[Event[Any]]] = {r.event.TOPIC: r.event for r in CATALOGUE}


def parse_event(topic: str, value: bytes | None) -> Event[Any] | None:
    """The event a record of ``topic`` carries, or None when its bytes are not one.

    The services dead-letter a malformed record; a reader that only follows the stream (the
    demo, a test waiting on a run) skips it instead of failing on someone else's bad input.
    """
    try:
        return EVENTS_BY_TOPIC[topic].model_validate_json(value or b"")
    except ValidationError:
        return None


@dataclass(frozen=True)
class Feed:
    """A topic fed from outside the catalogue's events: MinIO's bucket notifications."""

    topic: str
    producer: str
    consumers: tuple[str, ...]


FEEDS: tuple[Feed, ...] = (Feed(BUCKET_EVENTS_TOPIC, "minio", ("ingestion",)),)

OPERATOR = "operator"
"""The CLI's principal: it reads every topic (``events tail``, ``dlq list``, the demo) and writes
every topic a dead letter can come from, since ``dlq replay`` republishes a message to its
original topic."""
UPSTREAM = "upstream"
"""Producers outside ScrewOps (a scheduler, the line's MES, ``kcat``): they may only ask for a
training run. Images come in through the gRPC APIs and the drop bucket, never through Kafka, and
every other event states what a ScrewOps service did, which nobody outside may claim."""
UPSTREAM_TOPICS: tuple[str, ...] = (str(Topic.TRAINING_REQUESTED),)


@dataclass(frozen=True)
class Rights:
    """What one Kafka principal may do: the broker's ACLs are generated from these.

    ``groups`` are the consumer groups it may join (by exact name), ``group_prefixes`` those it
    may join by prefix: a service's ``<name>-`` groups, so that a second instance with a name of
    its own (``make bench-gateway``'s ``gateway-bench``) never joins, and takes partitions from,
    the running service's group. A principal reading without a group (the CLI) needs none.
    """

    principal: str
    write: frozenset[str] = frozenset()
    read: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    group_prefixes: frozenset[str] = frozenset()


def access_rights() -> dict[str, Rights]:
    """Each principal's rights, from the catalogue: a service writes the topics it produces and
    the dead-letter twins of those it consumes (the bus dead-letters there), reads the topics it
    consumes, in a group of its own name (the bus' default) or one named ``<name>-…``; MinIO
    writes its bucket notifications; the operator and upstream principals get what their
    docstrings say.
    """
    write: dict[str, set[str]] = {}
    read: dict[str, set[str]] = {}
    flows = [(str(r.event.TOPIC), r.producer, r.consumers) for r in CATALOGUE]
    flows += [(f.topic, f.producer, f.consumers) for f in FEEDS]
    for topic, producer, consumers in flows:
        write.setdefault(producer, set()).add(topic)
        for consumer in consumers:
            read.setdefault(consumer, set()).add(topic)
            write.setdefault(consumer, set()).add(dlq_topic(topic))
    services = set(read)
    rights = {
        name: Rights(
            name,
            write=frozenset(write.get(name, ())),
            read=frozenset(read.get(name, ())),
            groups=frozenset({name}) if name in services else frozenset(),
            group_prefixes=frozenset({f"{name}-"}) if name in services else frozenset(),
        )
        for name in {*write, *read}
    }
    sources = [topic for topic, _, _ in flows]
    rights[OPERATOR] = Rights(OPERATOR, write=frozenset(sources), read=frozenset(all_topics()))
    rights[UPSTREAM] = Rights(UPSTREAM, write=frozenset(UPSTREAM_TOPICS))
    return rights


def all_topics() -> list[str]:
    """Every topic the stack creates: the catalogue, MinIO's bucket notifications, and each
    one's dead-letter twin."""
    topics = [*(r.event.TOPIC for r in CATALOGUE), BUCKET_EVENTS_TOPIC]
    return [t for topic in topics for t in (str(topic), dlq_topic(topic))]


__all__ = [
    "CATALOGUE",
    "DLQ_SUFFIX",
    "EVENTS_BY_TOPIC",
    "FEEDS",
    "OPERATOR",
    "UPSTREAM",
    "UPSTREAM_TOPICS",
    "AssertionResult",
    "DatasetIngested",
    "DatasetIngestedPayload",
    "DatasetLabeled",
    "DatasetLabeledPayload",
    "DatasetRejected",
    "DatasetRejectedPayload",
    "DatasetValidated",
    "DatasetValidatedPayload",
    "Feed",
    "InspectionCompleted",
    "InspectionCompletedPayload",
    "InspectionReviewed",
    "InspectionReviewedPayload",
    "ModelAliasMoved",
    "ModelAliasMovedPayload",
    "ModelApproved",
    "ModelApprovedPayload",
    "ModelDegraded",
    "ModelDegradedPayload",
    "ModelDeployed",
    "ModelDeployedPayload",
    "ModelRejected",
    "ModelRejectedPayload",
    "ModelReleased",
    "ModelReleasedPayload",
    "ModelRolledBack",
    "ModelRolledBackPayload",
    "ModelRolloutChanged",
    "ModelRolloutChangedPayload",
    "ModelTrained",
    "ModelTrainedPayload",
    "Rights",
    "Route",
    "ServedVersion",
    "SplitCounts",
    "Topic",
    "TrainingRequested",
    "TrainingRequestedPayload",
    "access_rights",
    "all_topics",
    "dlq_topic",
    "parse_event",
]
