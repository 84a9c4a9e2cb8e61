"""``screwops models export`` against a fake registry servicer and in-memory MinIO and run
records: the folder it writes (the SavedModel's files, the card in JSON and Markdown), the card
read from the evaluator's own report, and what it refuses before writing anything."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from screwops.v1 import registry_pb2, registry_pb2_grpc
from screwops_cli import export, runs
from screwops_cli.export import (
    CARD_JSON,
    CARD_MARKDOWN,
    SAVED_MODEL,
    ModelCard,
    build_card,
    onnx_status,
    render_markdown,
    shortest_float32,
)
from screwops_contracts.datasets import Bucket, Label
from screwops_contracts.models import EvaluationSummary, ModelKind
from screwops_errors import NotFoundError
from screwops_evaluator.config import Gate
from screwops_evaluator.report import Champion, EvaluationReport, InfraValidation
from screwops_metrics import LabeledImage, compute_metrics
from screwops_storage import StoredObject

from tests.unit.cli.support import screwops, serving
from tests.unit.cli.test_models import FakeRegistry
from tests.unit.cli.test_runs import FakeStore, record

RUN = "run-aaaaaaaaaaaa"
ARTIFACT = f"runs/{RUN}/attempts/1/saved_model"
REPORT = "evaluations/eval-1.json"
# A served graph names the op that cuts the strip; tf2onnx cannot convert it.
GRAPH = b"\x08\x01 ... ImageProjectiveTransformV3 ... Conv2D ..."
SAVED = {
    "saved_model.pb": GRAPH,
    "fingerprint.pb": b"fingerprint",
    "variables/variables.index": b"index",
    "variables/variables.data-00000-of-00001": b"weights" * 100,
}


def lineage(version: int = 3, *, frame_size: int = 256) -> registry_pb2.ModelVersion:
    created = Timestamp()
    created.FromDatetime(datetime(2026, 12, 1, 9, 30))
    return registry_pb2.ModelVersion(
        model_name="screw-classifier",
        version=version,
        stage=registry_pb2.MODEL_STAGE_PRODUCTION,
        aliases=["production"],
        dataset_id="screws",
        dataset_version=2,
        run_id=RUN,
        evaluation_id="eval-1",
        metrics={"accuracy": 0.9},
        threshold=0.37,
        created_at=created,
        report_key=REPORT,
        artifact_key=ARTIFACT,
        model_kind=registry_pb2.MODEL_KIND_GOOD_ONLY,
        frame_size=frame_size,
    )


def report() -> bytes:
    """The evaluator's report of the run, with real metrics (and intervals) and a champion."""
    labels = [Label.GOOD] * 6 + [Label.BAD] * 4
    images = [
        LabeledImage(f"{i:064x}", f"k{i}", label, None if label is Label.GOOD else "scratch_head")
        for i, label in enumerate(labels)
    ]
    scores = np.array([0.1, 0.2, 0.1, 0.3, 0.5, 0.2, 0.9, 0.8, 0.3, 0.7], np.float32)
    made = EvaluationReport(
        evaluation_id="eval-1",
        model_name="screw-classifier",
        run_id=RUN,
        dataset_id="screws",
        dataset_version=2,
        dataset_digest="d" * 64,
        artifact_key=ARTIFACT,
        cause_event_id="cause",
        evaluated_at=datetime(2026, 12, 1, 9, 29, tzinfo=UTC),
        passed=True,
        model_kind=ModelKind.GOOD_ONLY,
        threshold=0.37,
        gate=Gate(),
        checks=[],
        training_metrics={"auroc": 0.88},
        metrics=compute_metrics(images, scores, threshold=0.37),
        champion=Champion(version=2, triton_model="m", run_id="run-parent", threshold=0.5),
        infra=InfraValidation(triton_model="staging", version=1, served=True),
        images=[],
    )
    return made.model_dump_json().encode()


class LineageRegistry(FakeRegistry):
    """The CLI tests' fake registry, recording the lineage asked for too."""

    def GetLineage(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        return super().GetLineage(request, context)


@dataclass
class FakeObjects:
    """The models bucket in memory, read as ``ObjectStore`` reads it."""

    objects: dict[str, bytes] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)

    async def get_directory(self, bucket: str, prefix: str, root: Path) -> list[StoredObject]:
        assert bucket == Bucket.MODELS
        self.reads.append(prefix)
        keys = sorted(k for k in self.objects if k.startswith(f"{prefix}/"))
        if not keys:
            raise NotFoundError(f"nothing stored under {bucket}/{prefix}/")
        stored = []
        for key in keys:
            path = root / key.removeprefix(f"{prefix}/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.objects[key])
            digest = hashlib.sha256(self.objects[key]).hexdigest()
            stored.append(StoredObject(key, digest, len(self.objects[key])))
        return stored

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes:
        assert bucket == Bucket.MODELS
        self.reads.append(key)
        if key not in self.objects:
            raise NotFoundError(f"no object {bucket}/{key}")
        return self.objects[key]


@pytest.fixture
def objects(monkeypatch: pytest.MonkeyPatch) -> FakeObjects:
    fake = FakeObjects({f"{ARTIFACT}/{name}": data for name, data in SAVED.items()})
    fake.objects[REPORT] = report()
    monkeypatch.setattr(export, "open_objects", lambda: fake)
    return fake


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore({RUN: [record(RUN, status="finished", epochs=4)]})

    @asynccontextmanager
    async def opened() -> AsyncIterator[FakeStore]:
        yield fake

    monkeypatch.setattr(runs, "open_store", opened)
    return fake


@pytest.fixture
def registry() -> Iterator[tuple[LineageRegistry, str]]:
    fake = LineageRegistry(versions=[lineage(3), lineage(1, frame_size=0)])
    with serving(registry_pb2_grpc.add_RegistryServiceServicer_to_server, fake) as address:
        yield fake, address


def run_export(address: str, out: Path, *args: str) -> Any:
    return screwops(
        "models", "export", "3", "--out", str(out), "--address", address, "--model-name",
        "screw-classifier", *args,
    )  # fmt: skip


@pytest.mark.usefixtures("store")
def test_export_writes_the_saved_model_and_its_card(
    registry: tuple[LineageRegistry, str], objects: FakeObjects, tmp_path: Path
) -> None:
    fake, address = registry
    out = tmp_path / "export"

    result = run_export(address, out)

    assert result.exit_code == 0, result.output
    assert fake.requests[0].model_name == "screw-classifier"
    assert objects.reads == [ARTIFACT, REPORT]
    assert {p.name for p in out.iterdir()} == {CARD_MARKDOWN, CARD_JSON, SAVED_MODEL}
    for name, data in SAVED.items():
        assert (out / SAVED_MODEL / name).read_bytes() == data
    assert list(tmp_path.iterdir()) == [out], "no work folder is left beside the export"
    card = ModelCard.model_validate_json((out / CARD_JSON).read_text())
    assert (card.model_name, card.version, card.kind) == ("screw-classifier", 3, "good_only")
    assert (card.threshold, card.frame_size) == (0.37, 256)
    assert card.signature.inputs[0].name == "frames"
    assert card.signature.inputs[0].shape == [None, 256, 256, 1]
    assert [t.name for t in card.signature.outputs] == ["defect_probability", "part_found"]
    assert "defect_probability >= 0.37" in card.signature.decision
    assert card.metrics is not None
    assert card.metrics["accuracy"] == pytest.approx(0.8)
    assert card.metrics["accuracy_interval"]["method"] == "wilson"
    assert card.metrics["roc_auc_interval"]["method"] == "bootstrap"
    assert card.lineage.parent is not None
    assert (card.lineage.parent.version, card.lineage.parent.run_id) == (2, "run-parent")
    assert (card.lineage.dataset_id, card.lineage.dataset_version) == ("screws", 2)
    assert card.lineage.dataset_digest == "d" * 64
    assert card.training is not None
    assert card.training.params == {"epochs": 5, "batch_size": 16}
    assert (card.training.seed, card.training.epochs_run) == (7, 4)
    assert card.created_at == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert card.files["variables/variables.index"] == hashlib.sha256(b"index").hexdigest()
    assert card.onnx.file is None
    assert card.onnx.reason is not None
    assert "ImageProjectiveTransformV3" in card.onnx.reason
    markdown = (out / CARD_MARKDOWN).read_text()
    assert markdown == render_markdown(card)
    assert "| accuracy | 0.8000 | " in markdown
    assert "v2 (run run-parent)" in markdown
    assert "| batch_size | 16 |" in markdown
    assert ".numpy()[:, 0] >= 0.37)" in markdown
    assert "no ONNX: not converted" in " ".join(result.output.split())


@pytest.mark.usefixtures("store", "objects")
def test_json_prints_the_card(registry: tuple[LineageRegistry, str], tmp_path: Path) -> None:
    _, address = registry
    out = tmp_path / "export"

    result = run_export(address, out, "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads((out / CARD_JSON).read_text())


@pytest.mark.usefixtures("store", "objects")
def test_a_folder_holding_files_is_refused_before_anything_is_asked(
    registry: tuple[LineageRegistry, str], tmp_path: Path
) -> None:
    fake, address = registry
    (tmp_path / "mine.txt").write_text("keep me")

    result = run_export(address, tmp_path)

    assert result.exit_code == 2
    assert "not an empty folder" in result.output
    assert fake.requests == []
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.usefixtures("store")
def test_an_empty_folder_is_filled(
    registry: tuple[LineageRegistry, str], objects: FakeObjects, tmp_path: Path
) -> None:
    _, address = registry
    out = tmp_path / "empty"
    out.mkdir()

    result = run_export(address, out)

    assert result.exit_code == 0, result.output
    assert (out / CARD_JSON).is_file()


@pytest.mark.usefixtures("store", "objects")
def test_a_version_without_a_frame_size_is_refused(
    registry: tuple[LineageRegistry, str], tmp_path: Path
) -> None:
    _, address = registry
    out = tmp_path / "export"

    result = screwops("models", "export", "1", "--out", str(out), "--address", address)

    assert result.exit_code == 5
    assert "retrain it" in result.output
    assert not out.exists()


@pytest.mark.usefixtures("store", "objects")
def test_an_unknown_version_exits_4(registry: tuple[LineageRegistry, str], tmp_path: Path) -> None:
    _, address = registry

    result = screwops("models", "export", "9", "--out", str(tmp_path / "x"), "--address", address)

    assert result.exit_code == 4
    assert "has no version 9" in result.output


@pytest.mark.usefixtures("store")
def test_a_missing_artifact_exits_4_and_leaves_nothing(
    registry: tuple[LineageRegistry, str], objects: FakeObjects, tmp_path: Path
) -> None:
    _, address = registry
    objects.objects = {REPORT: report()}
    out = tmp_path / "export"

    result = run_export(address, out)

    assert result.exit_code == 4
    assert "nothing stored under" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_card_without_the_runs_record_or_metrics_says_so() -> None:
    evaluation = EvaluationSummary.model_validate_json(report())
    unscored = evaluation.model_copy(update={"metrics": None, "champion": None})
    card = build_card(
        lineage(3),
        unscored,
        None,
        files={},
        onnx=export.Onnx(file=None, reason="why not"),
        exported_at=datetime(2026, 12, 2, tzinfo=UTC),
    )

    markdown = render_markdown(card)

    assert card.training is None
    assert card.lineage.parent is None
    assert "The run's record is no longer kept." in markdown
    assert "no test-split metrics" in markdown
    assert "none: the model's first version" in markdown


def test_a_graph_without_the_strip_op_is_left_to_tf2onnx(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"Conv2D MatMul Sigmoid")

    status = onnx_status(tmp_path)

    assert status.file is None
    assert status.reason is not None
    assert "tf2onnx.convert --saved-model saved_model" in status.reason


@pytest.mark.parametrize("value", [0.37, 0.075, 1.0, 0.0, 0.123456789, 1e-7])
def test_a_threshold_is_written_as_the_shortest_decimal_of_its_float32(value: float) -> None:
    single = float(np.float32(value))

    written = shortest_float32(single)

    assert np.float32(written) == np.float32(value)
    assert len(repr(written)) <= len(repr(float(str(np.float32(value)))))


def test_the_trainers_served_graph_is_found_to_hold_the_strip_op(tmp_path: Path) -> None:
    """TensorFlow is imported here only: the other tests need none."""
    import tensorflow as tf
    from screwops_trainer.frames import FrameModel, export_frames, geometry

    def score(cut: Any) -> Any:
        return tf.reduce_mean(cut, axis=[1, 2, 3])

    kept = tf.Variable(1.0)
    model = FrameModel(score, 64, geometry(64, most_pixels_along=48), kept)
    saved = export_frames(model, tmp_path / SAVED_MODEL)

    status = onnx_status(saved)

    assert status.reason is not None
    assert "no ONNX conversion for ImageProjectiveTransformV3" in status.reason
