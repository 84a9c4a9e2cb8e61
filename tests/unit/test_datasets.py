"""The dataset documents' shared readers: where a version's documents live, parsing them, joining
manifest, labels and split, and the one definition of a version's digest."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from screwops_contracts.datasets import (
    Label,
    LabelSet,
    Manifest,
    Split,
    SplitName,
    check_version,
    dataset_digest,
    first_labels,
    labeled_split,
    labels_key,
    manifest_key,
    parse_document,
    parse_label_map,
    split_key,
)
from screwops_errors import InvalidInputError

from tests.support import image_label, manifest_image

NOW = datetime(2026, 1, 1, tzinfo=UTC)
A, B, C = ("a" * 64, "b" * 64, "c" * 64)


def documents() -> tuple[Manifest, LabelSet, Split]:
    return (
        Manifest(
            dataset_id="d",
            version=2,
            created_at=NOW,
            images=[manifest_image(A, "thread_top"), manifest_image(B), manifest_image(C)],
        ),
        LabelSet(
            dataset_id="d",
            version=2,
            labels=[
                image_label(A, Label.BAD),
                image_label(A, Label.GOOD),
                image_label(B, Label.BAD, "scratch_head"),
                image_label(C, Label.GOOD),
            ],
        ),
        Split(
            dataset_id="d",
            version=2,
            seed=0,
            assignments={C: SplitName.TRAIN, A: SplitName.TEST, B: SplitName.VALIDATION},
        ),
    )


def test_a_versions_documents_live_under_its_prefix() -> None:
    assert manifest_key("screws", 3) == "screws/v3/manifest.json"
    assert labels_key("screws", 3) == "screws/v3/labels.json"
    assert split_key("screws", 3) == "screws/v3/split.json"


def test_a_document_is_parsed_or_refused_with_its_key() -> None:
    _, _, split = documents()
    assert parse_document(Split, "d/v2/split.json", split.model_dump_json().encode()) == split
    with pytest.raises(InvalidInputError, match=r"datasets/d/v2/split.json is not a valid Split"):
        parse_document(Split, "d/v2/split.json", b'{"dataset_id": "d"}')


def test_documents_of_another_version_are_refused_by_name() -> None:
    manifest, labels, _ = documents()
    check_version("d", 2, ("manifest", manifest), ("label set", labels))
    with pytest.raises(InvalidInputError, match="the label set is for d v2, not d v3"):
        check_version("d", 3, ("label set", labels))


def test_the_split_joins_each_image_with_its_entry_and_first_label() -> None:
    manifest, labels, split = documents()
    assert first_labels(labels)[A].label is Label.BAD
    rows = labeled_split(manifest, labels, split)
    assert [(r.sha256, r.split, r.label, r.defect_type) for r in rows] == [
        (A, SplitName.TEST, Label.BAD, None),
        (B, SplitName.VALIDATION, Label.BAD, "scratch_head"),
        (C, SplitName.TRAIN, Label.GOOD, None),
    ]
    assert rows[0].image.defect_type == "thread_top"
    # Only the splits asked for are read: an unlabeled train image does not stop the test split.
    unlabeled = labels.model_copy(update={"labels": labels.labels[:3]})
    [test] = labeled_split(manifest, unlabeled, split, splits={SplitName.TEST})
    assert test.sha256 == A
    with pytest.raises(InvalidInputError, match=f"image {C}, which the label set lacks"):
        labeled_split(manifest, unlabeled, split)
    with pytest.raises(InvalidInputError, match="manifest lacks"):
        labeled_split(manifest.model_copy(update={"images": []}), labels, split)
    with pytest.raises(InvalidInputError, match="the manifest is for d v1, not d v2"):
        labeled_split(manifest.model_copy(update={"version": 1}), labels, split)


def test_the_digest_is_the_sha256_of_the_sorted_rows_canonical_json() -> None:
    rows = [
        (B, Label.BAD, "scratch_head", SplitName.VALIDATION),
        (A, Label.GOOD, None, SplitName.TEST),
    ]
    table = [[A, "good", None, "test"], [B, "bad", "scratch_head", "validation"]]
    canonical = json.dumps(table, separators=(",", ":")).encode()
    assert dataset_digest(rows) == hashlib.sha256(canonical).hexdigest()
    assert dataset_digest(reversed(rows)) == dataset_digest(rows)
    assert dataset_digest(rows[:1]) != dataset_digest(rows)
    moved = [rows[0], (A, Label.GOOD, None, SplitName.TRAIN)]
    assert dataset_digest(moved) != dataset_digest(rows)


def test_a_label_map_is_word_label_pairs_in_the_known_vocabulary() -> None:
    assert parse_label_map(" Defective=bad,fine = OK ") == {
        "defective": Label.BAD,
        "fine": Label.GOOD,
    }
    for text, problem in [
        ("defective", "expected word=label"),
        ("=bad", "expected word=label"),
        ("a=bad,A=good", "names 'a' twice"),
        ("a=maybe", "unknown label 'maybe'"),
    ]:
        with pytest.raises(InvalidInputError, match=problem):
            parse_label_map(text)
