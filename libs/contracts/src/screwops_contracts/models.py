"""The model contract between the trainer, the evaluator, the registry and the gateway.

The trainer exports a TensorFlow SavedModel whose ``SERVING_SIGNATURE`` takes a batch of decoded
full frames (``FRAMES_INPUT``: uint8 ``[n, S, S, 1]``, S the model's frame size) and returns, per
frame, the probability that the screw is defective (``PROBABILITY_OUTPUT``, float32 ``[n, 1]`` in
[0, 1]) and whether a screw was found at all (``PART_FOUND_OUTPUT``, float32 ``[n, 1]``, 1.0 found,
0.0 none: the probability of such a frame means nothing). Finding and aligning the screw is part
of the model's graph, so the trainer, Triton and every export run the same steps, and a client
only fits its image to the frame (``screwops_imaging.fit_frame``). Triton serves it under
``MODEL_NAME`` with the same tensor names; the registry's ``production`` alias names the version
the gateway uses when a request pins none.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MODEL_NAME = "screw-classifier"
# Triton loads a candidate under this name for the evaluator's infra validation.
STAGING_MODEL_NAME = "screw-classifier-staging"
PRODUCTION_ALIAS = "production"
# The version the evaluator approved that waits for an operator's release (manual release policy).
CANDIDATE_ALIAS = "candidate"
# The header Triton's model-control API (load, unload, the repository index) requires, holding
# the stack's model-control key, which only the registry and the evaluator are given: Triton checks
# it as named over HTTP and as "triton-grpc-protocol-" + it over gRPC (Triton's prefix).
MODEL_CONTROL_HEADER = "screwops-model-control"

SERVING_SIGNATURE = "serving_default"
FRAMES_INPUT = "frames"  # UINT8 [batch, S, S, 1]: decoded grey frames of the model's frame size
PROBABILITY_OUTPUT = "defect_probability"  # FP32 [batch, 1] in [0, 1]
PART_FOUND_OUTPUT = "part_found"  # FP32 [batch, 1]: 1.0 a screw was found in the frame, 0.0 none
# A frame whose part_found is below this holds no screw: it is refused, never judged.
PART_FOUND_MIN = 0.5
DEFAULT_THRESHOLD = 0.5
# The frame size of a model exported before models took full frames (it took a 128 px crop that
# every client preprocessed): such a version cannot serve the frames contract and must be
# retrained. Records and events written before frame sizes existed read as this.
NO_FRAME_SIZE = 0


def frame_size_problem(frame_size: int) -> str | None:
    """Why a version of this frame size cannot be served, or None when it can."""
    if frame_size > NO_FRAME_SIZE:
        return None
    return (
        "it was exported before models took full frames (it has no frame size): retrain it "
        "to serve it"
    )


class ModelKind(StrEnum):
    """How a model learns what a defect is; chosen per model name in settings.

    A line with few defects cannot feed a classifier: ``good_only`` learns the good screw alone
    (anomaly detection) and needs no defective image to train, only to be tested. Both kinds
    export a SavedModel scoring each image in [0, 1], so everything downstream serves them alike.
    """

    SUPERVISED = "supervised"
    GOOD_ONLY = "good_only"


# MinIO layout (bucket "models"): runs/<run_id>/attempts/<n>/saved_model/… for the SavedModel of
# a run's attempt n, runs/<run_id>/attempts/<n>/history.json and run.json beside it (runs recorded
# before attempts were kept apart have them at runs/<run_id>/…), evaluations/<evaluation_id>.json
# (and the attempt's own evaluations/<evaluation_id>/attempts/<n>.json), triton/<name>/<version>/…
# for the exported Triton model repository (the source the local repository is filled from).
EVALUATIONS_PREFIX = "evaluations"


def run_prefix(run_id: str, attempt: int | None = None) -> str:
    """Where a training run's artifacts live in the models bucket.

    Each attempt (the number its start claimed in the run record) has a prefix of its own, so two
    attempts running at once (a rebalance) never write each other's files; the record names the
    one whose artifacts it holds. ``attempt`` None is the run's own prefix, where runs recorded
    before attempts were kept apart have theirs.
    """
    prefix = f"runs/{run_id}"
    return prefix if attempt is None else f"{prefix}/attempts/{attempt}"


def saved_model_prefix(run_id: str, attempt: int | None = None) -> str:
    """Where a run's (attempt's) SavedModel directory lives in the models bucket."""
    return f"{run_prefix(run_id, attempt)}/saved_model"


def evaluation_id_of(model_name: str, run_id: str) -> str:
    """The evaluation of a run: one per (model, run), whoever evaluates it and however often.

    The evaluator names its record and report with it; the monitor derives it from the run a
    deployment names to find the production model's test-split scores.
    """
    return "eval-" + hashlib.sha256(f"{model_name}/{run_id}".encode()).hexdigest()[:16]


def evaluation_report_key(evaluation_id: str, attempt: int | None = None) -> str:
    """Where an evaluation's JSON report lives in the models bucket.

    Each attempt (the number its claim of the evaluation got) writes its own report; the one
    the evaluation's record names is then copied, once the record is complete, to the key fixed
    per evaluation (``attempt`` None), where the monitor, knowing only the run, reads it.
    """
    if attempt is None:
        return f"{EVALUATIONS_PREFIX}/{evaluation_id}.json"
    return f"{EVALUATIONS_PREFIX}/{evaluation_id}/attempts/{attempt}.json"


class ScoredTestImage(BaseModel):
    """One test-split image of an evaluation report, as far as other services may rely on it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    probability: float = Field(ge=0.0, le=1.0, description="The candidate's defect probability.")


class EvaluationScores(BaseModel):
    """The part of the evaluator's report that other services read: which run on which data, and
    the candidate's score on every test image.

    The evaluator writes much more (its gate, checks, the champion's scores); this view ignores
    the rest, so the report can grow without breaking a reader, and a unit test reads a report
    the evaluator built through it, so the two cannot drift apart unnoticed.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    evaluation_id: str
    model_name: str
    run_id: str
    dataset_id: str
    dataset_version: int = Field(ge=1)
    images: list[ScoredTestImage] = Field(
        description="Per test image; empty when the candidate could not be served."
    )


class ChampionSummary(BaseModel):
    """The production version an evaluation compared its candidate with."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = Field(ge=1)
    run_id: str | None = None


class EvaluationSummary(BaseModel):
    """The part of the evaluator's report a model card shows: when and on what the candidate was
    judged, its test-split metrics with their 95 % intervals, and the version it would replace.

    Like :class:`EvaluationScores`, a view that ignores the rest of the report; ``metrics`` is the
    evaluator's ``SplitMetrics`` as JSON (every value beside its interval, the confusion matrix,
    the recall per defect type), kept whole so a card shows what the gate saw.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    evaluation_id: str
    run_id: str
    dataset_digest: str
    evaluated_at: datetime
    passed: bool
    metrics: dict[str, Any] | None = Field(description="None when the candidate could not serve.")
    champion: ChampionSummary | None = Field(description="None for a model's first version.")
    training_metrics: dict[str, float] = Field(default_factory=dict)
