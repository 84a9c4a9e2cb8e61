"""``screwops models export``: a registered version taken out of the system, to run elsewhere.

The folder written holds:

- ``saved_model/``: the version's SavedModel exactly as Triton serves it. It is self-contained:
  the decoded full frame goes in, finding and aligning the screw happen inside the graph, a score
  in [0, 1] and whether a screw was found come out (``screwops_contracts.models``), so TensorFlow
  alone runs it. Each file's sha256 is checked against the digest MinIO recorded on upload.
- ``model_card.json`` and ``MODEL_CARD.md``: what the version is, how to call it, how it measured
  (every metric with its 95 % interval, from the evaluation that approved it), where it came from
  (dataset version, training run, the production version it was judged against) and the
  parameters it was trained with.

No ONNX file is written where the graph holds an op that tf2onnx cannot convert; the card says
which (see :data:`ONNX_TOOLCHAIN`).

The command reads what ``models show``, ``runs show`` and ``dlq replay`` read, with the stack's
settings: the registry's lineage over gRPC, the artifact and the evaluation report from MinIO,
the run's record from MongoDB.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
from pydantic import BaseModel, ConfigDict, Field
from screwops.v1 import registry_pb2, registry_pb2_grpc
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import (
    FRAMES_INPUT,
    MODEL_NAME,
    PART_FOUND_MIN,
    PART_FOUND_OUTPUT,
    PROBABILITY_OUTPUT,
    SERVING_SIGNATURE,
    EvaluationSummary,
    ModelKind,
    frame_size_problem,
)
from screwops_contracts.runs import RunRecord
from screwops_rpc import open_channel
from screwops_settings import StackSettings
from screwops_storage import StoredObject

from screwops_cli import runs
from screwops_cli.common import (
    ExitCode,
    Json,
    address_option,
    calling,
    console,
    emit,
    fail,
    resolve,
    token_option,
)

__all__ = [
    "CARD_JSON",
    "CARD_MARKDOWN",
    "ONNX_TOOLCHAIN",
    "SAVED_MODEL",
    "ModelCard",
    "build_card",
    "export_version",
    "onnx_status",
    "render_markdown",
    "write_export",
]

SAVED_MODEL = "saved_model"
CARD_JSON = "model_card.json"
CARD_MARKDOWN = "MODEL_CARD.md"
CARD_FORMAT = 1
# What was tried on the served graph (a supervised version's, trained by the trainer): tf2onnx
# installs beside the locked TensorFlow (protobuf 5.29 and numpy 1.26 resolve with it), converts
# the network's layers, but has no ONNX conversion for these ops, which cut the screw's strip
# inside the graph (screwops_trainer.align.strip); onnxruntime refuses its output (INVALID_GRAPH).
ONNX_TOOLCHAIN = "tf2onnx 1.17.0 (onnx 1.22.0, opset 17) with tensorflow-cpu 2.20.0"
UNCONVERTIBLE_OPS = ("ImageProjectiveTransformV3",)
TIMEOUT_S = 30.0
_KINDS = {
    registry_pb2.MODEL_KIND_UNSPECIFIED: ModelKind.SUPERVISED,
    registry_pb2.MODEL_KIND_SUPERVISED: ModelKind.SUPERVISED,
    registry_pb2.MODEL_KIND_GOOD_ONLY: ModelKind.GOOD_ONLY,
}
_STAGES = {
    registry_pb2.MODEL_STAGE_REGISTERED: "registered",
    registry_pb2.MODEL_STAGE_PRODUCTION: "production",
    registry_pb2.MODEL_STAGE_ARCHIVED: "archived",
    registry_pb2.MODEL_STAGE_FAILED: "failed",
}
# The headline metrics, in the card's order, each with its interval where the report has one.
_HEADLINE = ("accuracy", "precision", "recall", "f1", "roc_auc")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tensor(_Section):
    """One tensor of the serving signature."""

    name: str
    dtype: str
    shape: list[int | None] = Field(description="None: any size (the batch).")
    meaning: str


class Signature(_Section):
    """How to call the SavedModel and read its answer."""

    name: str = SERVING_SIGNATURE
    inputs: list[Tensor]
    outputs: list[Tensor]
    decision: str


class Parent(_Section):
    """The version that was production when this one was evaluated: the one it was compared
    with, and would replace."""

    version: int
    run_id: str | None


class Lineage(_Section):
    dataset_id: str
    dataset_version: int
    dataset_digest: str
    run_id: str
    evaluation_id: str
    parent: Parent | None
    report_key: str
    artifact_key: str


class Training(_Section):
    """What the run was given and how it went, from the trainer's record."""

    params: dict[str, Any]
    seed: int
    git_sha: str
    packages: dict[str, str]
    split_counts: dict[str, int]
    best_epoch: int | None
    epochs_run: int
    seconds: float | None
    metrics: dict[str, float]


class Onnx(_Section):
    file: str | None = Field(description="The ONNX file beside the card; None when not written.")
    reason: str | None = Field(description="Why it was not written.")


class ModelCard(_Section):
    """Everything ``model_card.json`` holds; ``MODEL_CARD.md`` says the same for people."""

    card_format: int = CARD_FORMAT
    model_name: str
    version: int
    kind: ModelKind
    stage: str
    aliases: list[str]
    threshold: float
    frame_size: int
    signature: Signature
    evaluated_at: datetime
    passed: bool
    metrics: dict[str, Any] | None = Field(
        description="The evaluation's test-split metrics, each with its 95 % interval."
    )
    lineage: Lineage
    training: Training | None = Field(description="None when the run's record is gone.")
    created_at: datetime
    exported_at: datetime
    files: dict[str, str] = Field(description="Each SavedModel file (relative path): sha256.")
    onnx: Onnx


class Objects(Protocol):
    """What the export reads from MinIO (:class:`screwops_storage.ObjectStore`)."""

    async def get_directory(self, bucket: str, prefix: str, root: Path) -> list[StoredObject]: ...

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes: ...


def _stack_objects() -> Objects:
    from screwops_storage import ObjectStore

    return ObjectStore.from_settings(StackSettings().minio)


# Tests replace this to read from memory.
open_objects: Callable[[], Objects] = _stack_objects


def signature(frame_size: int, threshold: float) -> Signature:
    """The frames contract of a version of ``frame_size``, read at ``threshold``."""
    return Signature(
        inputs=[
            Tensor(
                name=FRAMES_INPUT,
                dtype="uint8",
                shape=[None, frame_size, frame_size, 1],
                meaning=f"decoded grey frames of {frame_size} x {frame_size} px; fit another "
                "size first, keeping its aspect and padding with the frame's median grey "
                "(screwops_imaging.fit_frame)",
            )
        ],
        outputs=[
            Tensor(
                name=PROBABILITY_OUTPUT,
                dtype="float32",
                shape=[None, 1],
                meaning="the probability that the screw is defective, in [0, 1]",
            ),
            Tensor(
                name=PART_FOUND_OUTPUT,
                dtype="float32",
                shape=[None, 1],
                meaning="1.0 when a screw was found in the frame, 0.0 when none was",
            ),
        ],
        decision=f"no screw when {PART_FOUND_OUTPUT} < {PART_FOUND_MIN} (the probability then "
        f"means nothing; ScrewOps refuses such a frame); otherwise defective when "
        f"{PROBABILITY_OUTPUT} >= {threshold:.6g}, good below",
    )


def onnx_status(saved_model: Path) -> Onnx:
    """Whether an ONNX file can be written for the SavedModel in ``saved_model``: the ops of its
    graph that tf2onnx cannot convert are named in its ``saved_model.pb``."""
    graph = (saved_model / "saved_model.pb").read_bytes()
    blocking = [op for op in UNCONVERTIBLE_OPS if op.encode() in graph]
    if blocking:
        return Onnx(
            file=None,
            reason=f"not converted: {ONNX_TOOLCHAIN} installs and converts the network's layers, "
            f"but has no ONNX conversion for {', '.join(blocking)}, which cuts the screw's strip "
            "inside the served graph (the alignment), so onnxruntime refuses what it writes "
            "(INVALID_GRAPH); the network alone is not a separate "
            "artifact of a version. Run the SavedModel with TensorFlow.",
        )
    return Onnx(
        file=None,
        reason="not converted: the CLI carries neither TensorFlow nor tf2onnx; "
        f"`python -m tf2onnx.convert --saved-model {SAVED_MODEL} --output model.onnx` "
        f"({ONNX_TOOLCHAIN}) may convert this graph, which holds none of the ops known to "
        "block it",
    )


def build_card(
    found: registry_pb2.ModelVersion,
    evaluation: EvaluationSummary,
    run: RunRecord | None,
    *,
    files: dict[str, str],
    onnx: Onnx,
    exported_at: datetime,
) -> ModelCard:
    """The card of ``found``, from the registry's lineage, the evaluation's report and the
    trainer's record of its run."""
    champion = evaluation.champion
    training = (
        None
        if run is None
        else Training(
            params=run.params,
            seed=run.seed,
            git_sha=run.git_sha,
            packages=run.packages,
            split_counts=run.split_counts,
            best_epoch=run.best_epoch,
            epochs_run=len(run.epochs),
            seconds=run.training_seconds,
            metrics=run.metrics,
        )
    )
    threshold = shortest_float32(found.threshold)
    return ModelCard(
        model_name=found.model_name,
        version=found.version,
        kind=_KINDS.get(found.model_kind, ModelKind.SUPERVISED),
        stage=_STAGES.get(found.stage, "unknown"),
        aliases=list(found.aliases),
        threshold=threshold,
        frame_size=found.frame_size,
        signature=signature(found.frame_size, threshold),
        evaluated_at=evaluation.evaluated_at,
        passed=evaluation.passed,
        metrics=evaluation.metrics,
        lineage=Lineage(
            dataset_id=found.dataset_id,
            dataset_version=found.dataset_version,
            dataset_digest=evaluation.dataset_digest,
            run_id=found.run_id,
            evaluation_id=found.evaluation_id,
            parent=None if champion is None else Parent(**champion.model_dump()),
            report_key=found.report_key,
            artifact_key=found.artifact_key,
        ),
        training=training,
        created_at=found.created_at.ToDatetime(tzinfo=UTC),
        exported_at=exported_at,
        files=files,
        onnx=onnx,
    )


def shortest_float32(value: float) -> float:
    """The shortest decimal that is the same float32 as ``value`` (the registry keeps thresholds
    as float32): 0.37, not 0.3700000047683716. Compared with a float32 score it decides alike."""
    single = struct.unpack("f", struct.pack("f", value))[0]
    for digits in range(1, 10):
        text = f"{single:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == single:
            return float(text)
    return float(single)


def _figure(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _interval(interval: dict[str, Any] | None) -> str:
    if not interval:
        return ""
    return f"{interval['low']:.4f} to {interval['high']:.4f} ({interval['method']})"


def _metrics_markdown(metrics: dict[str, Any] | None) -> list[str]:
    if metrics is None:
        return ["The version could not be scored when it was evaluated: no test-split metrics."]
    confusion = metrics["confusion"]
    lines = [
        f"On the test split of its dataset version ({metrics['images']} images: "
        f"{metrics['good']} good, {metrics['defective']} defective), at threshold "
        f"{metrics['threshold']:.6g}; intervals are 95 %.",
        "",
        "| metric | value | 95 % interval |",
        "|---|---|---|",
        *(
            f"| {name} | {_figure(metrics.get(name))} | "
            f"{_interval(metrics.get(f'{name}_interval'))} |"
            for name in _HEADLINE
        ),
        "",
        f"Confusion (defective is positive): caught {confusion['true_positives']}, missed "
        f"{confusion['false_negatives']}, good screws rejected {confusion['false_positives']}, "
        f"good screws passed {confusion['true_negatives']}.",
    ]
    per_type = metrics.get("per_defect_type") or {}
    if per_type:
        lines += ["", "| defect type | caught | recall | 95 % interval |", "|---|---|---|---|"]
        lines += [
            f"| {name} | {caught['caught']}/{caught['images']} | {caught['recall']:.4f} | "
            f"{_interval(caught['interval'])} |"
            for name, caught in sorted(per_type.items())
        ]
    return lines


def _shape(shape: list[int | None]) -> str:
    return "[" + ", ".join("n" if side is None else str(side) for side in shape) + "]"


def _use_markdown(card: ModelCard) -> list[str]:
    size = card.frame_size
    return [
        f"`{SAVED_MODEL}/` is a TensorFlow SavedModel with the signature "
        f"`{card.signature.name}`; TensorFlow alone runs it (finding and aligning the screw are "
        "part of the graph):",
        "",
        "| tensor | dtype | shape | meaning |",
        "|---|---|---|---|",
        *(
            f"| `{t.name}` | {t.dtype} | {_shape(t.shape)} | {t.meaning} |"
            for t in [*card.signature.inputs, *card.signature.outputs]
        ),
        "",
        f"Decision: {card.signature.decision}.",
        "",
        "```python",
        "import numpy as np",
        "import tensorflow as tf",
        "",
        f'serve = tf.saved_model.load("{SAVED_MODEL}").signatures["{card.signature.name}"]',
        f"frames = np.zeros((1, {size}, {size}, 1), np.uint8)  # your decoded grey frames",
        f"out = serve({FRAMES_INPUT}=tf.constant(frames))",
        f'found = out["{PART_FOUND_OUTPUT}"].numpy()[:, 0] >= {PART_FOUND_MIN}',
        f'defective = found & (out["{PROBABILITY_OUTPUT}"].numpy()[:, 0] >= {card.threshold})',
        "```",
    ]


def _lineage_markdown(lineage: Lineage) -> list[str]:
    parent = (
        f"v{lineage.parent.version} (run {lineage.parent.run_id or 'unknown'}), production when "
        "this version was evaluated: the version it was compared with"
        if lineage.parent
        else "none: the model's first version"
    )
    return [
        "| | |",
        "|---|---|",
        f"| dataset | {lineage.dataset_id} v{lineage.dataset_version} "
        f"(digest {lineage.dataset_digest}) |",
        f"| training run | {lineage.run_id} |",
        f"| evaluation | {lineage.evaluation_id} (report `models/{lineage.report_key}`) |",
        f"| parent | {parent} |",
        f"| artifact | `models/{lineage.artifact_key}` |",
    ]


def _training_markdown(training: Training | None) -> list[str]:
    if training is None:
        return ["The run's record is no longer kept."]
    return [
        f"Seed {training.seed}, code {training.git_sha}, split "
        + ", ".join(f"{k} {v}" for k, v in sorted(training.split_counts.items()))
        + f"; {training.epochs_run} epochs run, best {training.best_epoch}"
        + (f", {training.seconds:.1f} s." if training.seconds is not None else "."),
        "",
        "| parameter | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(training.params.items())),
    ]


def render_markdown(card: ModelCard) -> str:
    """``MODEL_CARD.md``: the card for people, with how to run the export elsewhere."""
    size, aliases = card.frame_size, ", ".join(card.aliases)
    lines = [
        f"# {card.model_name} v{card.version}",
        "",
        f"A {card.kind.value.replace('_', '-')} screw defect detector exported from ScrewOps on "
        f"{card.exported_at.isoformat(timespec='seconds')}.",
        "",
        "| | |",
        "|---|---|",
        f"| kind | {card.kind.value} |",
        f"| stage | {card.stage}{f' (aliases: {aliases})' if aliases else ''} |",
        f"| threshold | {card.threshold:.6g} (chosen on the validation split) |",
        f"| frame | {size} x {size} px, grey, the full frame |",
        f"| registered | {card.created_at.isoformat(timespec='seconds')} |",
        f"| evaluated | {card.evaluated_at.isoformat(timespec='seconds')}, "
        f"{'passed' if card.passed else 'failed'} the gate |",
        "",
        "## Use",
        "",
        *_use_markdown(card),
        "",
        "## Metrics",
        "",
        *_metrics_markdown(card.metrics),
        "",
        "## Lineage",
        "",
        *_lineage_markdown(card.lineage),
        "",
        "## Training",
        "",
        *_training_markdown(card.training),
        "",
        "## ONNX",
        "",
        f"`{card.onnx.file}`" if card.onnx.file else (card.onnx.reason or ""),
        "",
        "## Files",
        "",
        "| file | sha256 |",
        "|---|---|",
        *(f"| `{SAVED_MODEL}/{name}` | {digest} |" for name, digest in sorted(card.files.items())),
        "",
    ]
    return "\n".join(lines)


def _place(work: Path, out: Path, card: ModelCard) -> None:
    """Write the card beside the SavedModel and move the finished folder to ``out``."""
    (work / CARD_JSON).write_text(card.model_dump_json(indent=2) + "\n")
    (work / CARD_MARKDOWN).write_text(render_markdown(card))
    if out.exists():
        out.rmdir()
    os.replace(work, out)


async def write_export(
    out: Path, found: registry_pb2.ModelVersion, objects: Objects, store: runs.RunStore
) -> ModelCard:
    """Write ``found``'s export to ``out`` (absent or empty) and return its card.

    Everything is written to a folder beside ``out`` first and renamed into place at the end, so
    ``out`` never holds half an export.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        saved = work / SAVED_MODEL
        stored = await objects.get_directory(Bucket.MODELS, found.artifact_key, saved)
        report = await objects.get_verified(Bucket.MODELS, found.report_key)
        evaluation = EvaluationSummary.model_validate_json(report)
        card = build_card(
            found,
            evaluation,
            await store.run(found.run_id),
            files={item.key.removeprefix(f"{found.artifact_key}/"): item.sha256 for item in stored},
            onnx=onnx_status(saved),
            exported_at=datetime.now(UTC),
        )
        _place(work, out, card)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return card


def export_version(
    version: Annotated[int, typer.Argument(min=1, help="The version to export.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="The folder to write; it must not exist or be empty.", show_default=False
        ),
    ],
    model: Annotated[
        str, typer.Option("--model-name", "--model", help="The registered model.")
    ] = MODEL_NAME,
    address: Annotated[str | None, address_option("registry")] = None,
    token: Annotated[str | None, token_option("registry")] = None,
    as_json: Json = False,
) -> None:
    """Write a version's self-contained SavedModel and its model card (metrics with intervals,
    threshold, signature, lineage, training) to a folder, to run it outside ScrewOps."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"{out} exists and is not an empty folder", ExitCode.USAGE)
    target = resolve("registry", address)
    request = registry_pb2.GetLineageRequest(model_name=model, version=version)
    with calling("registry", target), open_channel(target, token) as channel:
        found = registry_pb2_grpc.RegistryServiceStub(channel).GetLineage(
            request, timeout=TIMEOUT_S
        )
    problem = frame_size_problem(found.frame_size)
    if problem is not None:
        fail(f"{model} v{version} cannot be exported: {problem}", ExitCode.REFUSED)

    async def export() -> ModelCard:
        async with runs.open_store() as store:
            return await write_export(out, found, open_objects(), store)

    with calling("MinIO and MongoDB (the version's artifact, report and run)"):
        card = asyncio.run(export())
    if as_json:
        emit(json.loads(card.model_dump_json()))
        return
    console.print(
        f"{card.model_name} v{card.version} ({card.kind.value}, threshold {card.threshold:.4g}, "
        f"{card.frame_size} px frames) exported to {out}: {SAVED_MODEL}/ "
        f"({len(card.files)} files), {CARD_JSON}, {CARD_MARKDOWN}"
    )
    if card.onnx.file is None:
        console.print(f"no ONNX: {card.onnx.reason}")
