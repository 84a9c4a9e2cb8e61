"""Run identity, the rows a run is fed and their digest, and the provenance a run records."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from screwops_contracts.datasets import (
    Label,
    LabelSet,
    Manifest,
    Split,
    SplitName,
    dataset_digest,
)
from screwops_contracts.runs import RunRecord
from screwops_errors import IntegrityError, InvalidInputError
from screwops_trainer.dataset import check_digest, examples
from screwops_trainer.params import TrainingParams
from screwops_trainer.provenance import UNKNOWN, git_sha, package_versions
from screwops_trainer.store import run_id
from screwops_validation.measures import Sample
from screwops_validation.service import digest_rows

from tests.support import image_label, manifest_image

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SHAS = [c * 64 for c in "abcdef"]
SPLITS = [SplitName.TRAIN, SplitName.TRAIN, SplitName.VALIDATION, SplitName.TEST] * 2


def documents() -> tuple[Manifest, LabelSet, Split]:
    images = [manifest_image(sha) for sha in SHAS]
    labels = [
        image_label(sha, Label.BAD, "scratch_head") if i % 2 else image_label(sha, Label.GOOD)
        for i, sha in enumerate(SHAS)
    ]
    return (
        Manifest(dataset_id="screws", version=1, created_at=NOW, images=images),
        LabelSet(dataset_id="screws", version=1, labels=labels),
        Split(
            dataset_id="screws",
            version=1,
            seed=0,
            assignments=dict(zip(SHAS, SPLITS, strict=False)),
        ),
    )


def test_the_run_id_names_model_data_and_params_and_nothing_else() -> None:
    params = TrainingParams()
    one = run_id("screw-classifier", "d" * 64, params)
    assert one == run_id("screw-classifier", "d" * 64, TrainingParams())
    assert one.startswith("run-")
    assert len(one) == len("run-") + 12
    int(one.removeprefix("run-"), 16)
    assert one != run_id("screw-classifier", "e" * 64, params)
    assert one != run_id("other", "d" * 64, params)
    assert one != run_id("screw-classifier", "d" * 64, params.model_copy(update={"seed": 8}))
    keys = RunRecord.keys(one)
    assert keys["artifact_key"] == f"runs/{one}/saved_model"
    assert keys["history_key"] == f"runs/{one}/history.json"
    second = RunRecord.keys(one, 2)
    assert second["artifact_key"] == f"runs/{one}/attempts/2/saved_model"
    assert second["record_key"] == f"runs/{one}/attempts/2/run.json"


def test_the_digest_is_validations_digest_of_the_same_rows() -> None:
    manifest, labels, split = documents()
    rows = examples(manifest, labels, split)
    assert [r.sha256 for r in rows] == sorted(SHAS)
    assert [r.target for r in rows] == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    first = {label.sha256: label for label in labels.labels}
    samples = [Sample(image, first[image.sha256], None) for image in manifest.images]
    announced = dataset_digest(digest_rows(samples, split.assignments))
    check_digest(rows, announced, where="screws@v1")
    with pytest.raises(IntegrityError, match="screws@v1"):
        check_digest(rows, "0" * 64, where="screws@v1")


def test_documents_of_another_version_are_refused() -> None:
    manifest, labels, split = documents()
    with pytest.raises(InvalidInputError, match="label set is for screws v2, not screws v1"):
        examples(manifest, labels.model_copy(update={"version": 2}), split)
    unlabeled = labels.model_copy(update={"labels": labels.labels[1:]})
    with pytest.raises(InvalidInputError, match="label set lacks"):
        examples(manifest, unlabeled, split)


def test_the_git_commit_is_the_configured_one_or_heads_or_unknown(tmp_path: Path) -> None:
    assert git_sha("feedbeef") == "feedbeef"
    assert git_sha(cwd=tmp_path) == UNKNOWN
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if head:
        assert git_sha() == head


def test_package_versions_name_what_decides_a_models_numbers() -> None:
    versions = package_versions()
    assert set(versions) == {"tensorflow", "keras", "numpy", "screwops-trainer"}
    assert UNKNOWN not in versions.values()
