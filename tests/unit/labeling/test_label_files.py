"""Reading labeling tools' exports: CSV, Label Studio JSON and JSON-MIN, valid and invalid rows,
and matching what a row names to an image."""

from __future__ import annotations

import json
from typing import Any

import pytest
from screwops_contracts.datasets import Label, parse_label
from screwops_errors import InvalidInputError
from screwops_labeling.label_files import (
    ImageIndex,
    LabelFileFormat,
    LabelRow,
    RowProblem,
    read_labels,
)

GOOD, BAD = Label.GOOD, Label.BAD
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


@pytest.mark.parametrize(
    ("word", "label"),
    [("good", GOOD), (" OK ", GOOD), ("bad", BAD), ("Not-Good", BAD), ("ng", BAD), ("defect", BAD)],
)
def test_label_words_map_to_two_classes(word: str, label: Label) -> None:
    assert parse_label(word) is label


@pytest.mark.parametrize(("word", "match"), [("", "no label"), ("meh", "unknown label 'meh'")])
def test_other_words_are_refused(word: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        parse_label(word)


# --- CSV -----------------------------------------------------------------------------------------


def test_a_csv_without_header_is_filename_label_defect_type() -> None:
    content = b"good/0.png,good\n\nbad/1.png,not-good,thread_top\n"

    parsed = read_labels(LabelFileFormat.CSV, content)

    assert parsed.rows == [
        LabelRow(1, "good/0.png", GOOD),
        LabelRow(3, "bad/1.png", BAD, defect_type="thread_top"),
    ]
    assert parsed.problems == []


def test_a_csv_header_names_its_columns_in_any_order() -> None:
    content = f"\ufefflabel,annotator,sha256\nbad,ana,{SHA_A}\nok,,{SHA_B}\n".encode()

    parsed = read_labels(LabelFileFormat.CSV, content)

    assert parsed.rows == [LabelRow(2, SHA_A, BAD, annotator="ana"), LabelRow(3, SHA_B, GOOD)]


def test_each_bad_csv_row_is_reported_with_its_line_and_reason() -> None:
    content = b"filename,label,defect_type\n,good,\na.png,maybe,\nb.png,good,scratch_head\nc.png\n"

    parsed = read_labels(LabelFileFormat.CSV, content)

    assert parsed.rows == []
    assert parsed.problems == [
        RowProblem(2, "", "no filename or sha256"),
        RowProblem(
            3,
            "a.png",
            "unknown label 'maybe': expected one of good, ok, bad, not-good, not_good, ng, defect",
        ),
        RowProblem(4, "b.png", "a good image has no defect type (got 'scratch_head')"),
        RowProblem(5, "c.png", "no label"),
    ]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\xff\xfe\x00bad", "not UTF-8"),
        (b"label,annotator\ngood,ana\n", "names no image column"),
        (b'a.png,"good\n', "cannot be read"),
    ],
)
def test_a_file_that_is_no_csv_refuses_the_whole_import(content: bytes, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        read_labels(LabelFileFormat.CSV, content)


# --- Label Studio --------------------------------------------------------------------------------


def task(image: str, *annotations: dict[str, Any]) -> dict[str, Any]:
    return {"id": 1, "data": {"image": image}, "annotations": list(annotations), "predictions": []}


def annotation(*choices: str, cancelled: bool = False, by: Any = 1) -> dict[str, Any]:
    return {
        "id": 7,
        "completed_by": by,
        "was_cancelled": cancelled,
        "result": [
            {
                "from_name": "choice",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": list(choices)},
            }
        ],
    }


def test_a_label_studio_export_takes_each_tasks_last_kept_annotation() -> None:
    export = [
        task("/data/upload/1/0a1b2c3d-0.png", annotation("good")),
        task("/data/upload/1/0a1b2c3d-1.png", annotation("good"), annotation("bad")),
        task(
            "/data/upload/1/0a1b2c3d-2.png",
            annotation("bad", by={"email": "ana@plant-7"}),
            annotation("good", cancelled=True),
        ),
    ]

    parsed = read_labels(LabelFileFormat.LABEL_STUDIO_JSON, json.dumps(export).encode())

    assert parsed.rows == [
        LabelRow(1, "/data/upload/1/0a1b2c3d-0.png", GOOD),
        LabelRow(2, "/data/upload/1/0a1b2c3d-1.png", BAD),
        LabelRow(3, "/data/upload/1/0a1b2c3d-2.png", BAD, annotator="ana@plant-7"),
    ]


def test_unreadable_label_studio_tasks_are_reported() -> None:
    export = [
        task("a.png"),
        task("b.png", annotation("good", "bad")),
        task("c.png", annotation("maybe")),
        {"data": {"text": "no image"}, "annotations": [annotation("good")]},
        "not a task",
    ]

    parsed = read_labels(LabelFileFormat.LABEL_STUDIO_JSON, json.dumps(export).encode())

    assert parsed.rows == []
    assert [(p.row, p.reference) for p in parsed.problems] == [
        (1, "a.png"),
        (2, "b.png"),
        (3, "c.png"),
        (4, ""),
        (5, ""),
    ]
    assert [p.reason.split(" (")[0].split(":")[0] for p in parsed.problems] == [
        "the task has no annotation",
        "expected one choice",
        "unknown label 'maybe'",
        "the task names no image",
        "a task is an object with 'data'",
    ]


def test_a_json_min_export_reads_the_choice_under_its_tag_name() -> None:
    export = [
        {"image": "s3://screws/raw/aa/" + SHA_A, "choice": "good", "annotator": "ana"},
        {"image": "b.png", "label": {"choices": ["bad"]}},
        {"sha256": SHA_C, "choices": ["not-good"]},
        {"image": "d.png"},
    ]

    parsed = read_labels(LabelFileFormat.LABEL_STUDIO_JSON_MIN, json.dumps(export).encode())

    assert parsed.rows == [
        LabelRow(1, "s3://screws/raw/aa/" + SHA_A, GOOD, annotator="ana"),
        LabelRow(2, "b.png", BAD),
        LabelRow(3, SHA_C, BAD),
    ]
    assert parsed.problems == [
        RowProblem(4, "d.png", "the item has no choice (one of choice, choices, label, class)")
    ]


@pytest.mark.parametrize(
    ("content", "match"), [(b"{not json", "not JSON"), (b'{"image": "a.png"}', "JSON list")]
)
def test_a_file_that_is_no_label_studio_export_refuses_the_whole_import(
    content: bytes, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        read_labels(LabelFileFormat.LABEL_STUDIO_JSON_MIN, content)


# --- matching rows to images ---------------------------------------------------------------------


@pytest.fixture
def index() -> ImageIndex:
    return ImageIndex(
        [
            (SHA_A, "train/good/000.png"),
            (SHA_B, "test/scratch_head/001.png"),
            (SHA_C, "test/thread_top/000.png"),
        ]
    )


@pytest.mark.parametrize(
    ("reference", "sha"),
    [
        (SHA_B, SHA_B),
        ("train/good/000.png", SHA_A),
        ("001.png", SHA_B),
        ("/data/upload/3/5d1c2b7a-001.png", SHA_B),
        ("/data/local-files/?d=screws/test/scratch_head/001.png", SHA_B),
        ("http://minio:9000/images/raw/cc/" + SHA_C, SHA_C),
        (f"{SHA_A}.png", SHA_A),
        ("d" * 64, None),
        ("002.png", None),
    ],
)
def test_a_reference_finds_its_image_by_digest_path_or_name(
    index: ImageIndex, reference: str, sha: str | None
) -> None:
    assert index.match(reference) == sha


def test_a_name_shared_by_several_images_is_ambiguous(index: ImageIndex) -> None:
    with pytest.raises(InvalidInputError, match=r"'000\.png' names 2 different images"):
        index.match("000.png")
