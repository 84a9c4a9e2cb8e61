"""``screwops label`` against a fake labeling servicer: imports in each format, labeling images
one by one from the keyboard, and the review queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from screwops.v1 import ingestion_pb2, inspection_pb2, labeling_pb2, labeling_pb2_grpc

from tests.unit.cli.support import screwops, serving

SHAS = ["a" * 64, "b" * 64, "c" * 64]


@dataclass
class FakeLabeling(labeling_pb2_grpc.LabelingServiceServicer):
    unlabeled: list[str] = field(default_factory=lambda: list(SHAS))
    imports: list[Any] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    reviews: list[Any] = field(default_factory=list)

    def ImportLabels(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.imports.append(request)
        return labeling_pb2.ImportLabelsResponse(
            applied_count=2,
            unchanged_count=1,
            unmatched_count=1,
            invalid_count=0,
            problems=[labeling_pb2.LabelImportProblem(row=4, reference="x.png", reason="unknown")],
            remaining_count=5,
        )

    def NextUnlabeled(self, request: Any, context: Any) -> Any:  # noqa: N802
        if request.dataset_id != "screws":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no dataset {request.dataset_id!r}")
        if not self.unlabeled:
            context.abort(grpc.StatusCode.NOT_FOUND, "nothing to label in dataset 'screws'")
        sha = self.unlabeled[0]
        return labeling_pb2.LabelTask(
            image_sha256=sha,
            dataset_id="screws",
            dataset_version=2,
            image=b"\x89PNG " + sha.encode(),
            filename=f"train/good/{sha[:4]}.png",
            reserved_until=Timestamp(seconds=1_790_000_000),
            remaining_count=len(self.unlabeled),
        )

    def SubmitLabel(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.labels.append(request)
        self.unlabeled.remove(request.image_sha256)
        return labeling_pb2.SubmitLabelResponse(remaining_count=len(self.unlabeled))

    def ListReviewQueue(self, request: Any, context: Any) -> Any:  # noqa: N802
        item = labeling_pb2.ReviewItem(
            inspection_id="insp-1",
            image_sha256=SHAS[0],
            line_id="line-3",
            camera_id="cam-a",
            verdict=inspection_pb2.VERDICT_DEFECT,
            defect_probability=0.52,
            threshold=0.5,
            model_name="screw-classifier",
            model_version=4,
            inspected_at=Timestamp(seconds=1_790_000_000),
            queue_reason="near threshold",
        )
        items = [item] if request.line_id in ("", "line-3") else []
        return labeling_pb2.ListReviewQueueResponse(review_items=items, total_size=len(items))

    def CloseVersion(self, request: Any, context: Any) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by the CLI")

    def SubmitReview(self, request: Any, context: Any) -> Any:  # noqa: N802
        if request.inspection_id != "insp-1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no inspection {request.inspection_id!r}")
        self.reviews.append(request)
        return labeling_pb2.SubmitReviewResponse(
            verdict_correct=request.label == ingestion_pb2.LABEL_BAD, remaining_count=0
        )


@pytest.fixture
def labeling() -> Iterator[tuple[FakeLabeling, str]]:
    fake = FakeLabeling()
    with serving(labeling_pb2_grpc.add_LabelingServiceServicer_to_server, fake) as address:
        yield fake, address


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("labels.csv", b"filename,label\na.png,good\n", labeling_pb2.LABEL_FORMAT_CSV),
        (
            "export.json",
            json.dumps([{"id": 1, "data": {"image": "a.png"}, "annotations": []}]).encode(),
            labeling_pb2.LABEL_FORMAT_LABEL_STUDIO_JSON,
        ),
        (
            "export-min.json",
            json.dumps([{"image": "a.png", "choice": "good"}]).encode(),
            labeling_pb2.LABEL_FORMAT_LABEL_STUDIO_JSON_MIN,
        ),
    ],
)
def test_import_detects_the_format_and_sends_the_file(
    labeling: tuple[FakeLabeling, str], tmp_path: Path, name: str, content: bytes, expected: int
) -> None:
    fake, address = labeling
    path = tmp_path / name
    path.write_bytes(content)

    result = screwops(
        "label", "import", str(path), "--dataset", "screws", "--annotator", "ana",
        "--address", address,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    request = fake.imports[-1]
    assert (request.dataset_id, request.format, request.content, request.annotator) == (
        "screws",
        expected,
        content,
        "ana",
    )
    assert "row 4" in result.stdout
    assert "x.png: unknown" in result.stdout


def test_import_with_an_explicit_format_and_json_output(
    labeling: tuple[FakeLabeling, str], tmp_path: Path
) -> None:
    fake, address = labeling
    path = tmp_path / "export.txt"
    path.write_text("[]")
    result = screwops(
        "label", "import", str(path), "--dataset", "screws", "--format", "label-studio-min",
        "--address", address, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert fake.imports[-1].format == labeling_pb2.LABEL_FORMAT_LABEL_STUDIO_JSON_MIN
    assert json.loads(result.stdout)["applied_count"] == "2"


def test_import_refuses_a_broken_json_file_before_calling(
    labeling: tuple[FakeLabeling, str], tmp_path: Path
) -> None:
    fake, address = labeling
    path = tmp_path / "export.json"
    path.write_text("{not json")
    result = screwops("label", "import", str(path), "--dataset", "screws", "--address", address)
    assert result.exit_code == 2
    assert "not valid JSON" in result.stderr
    assert fake.imports == []


def test_next_labels_images_from_the_keyboard_until_none_is_left(
    labeling: tuple[FakeLabeling, str], tmp_path: Path
) -> None:
    fake, address = labeling
    result = screwops(
        "label", "next", "--dataset", "screws", "--annotator", "ana",
        "--save-dir", str(tmp_path), "--address", address,
        input="g\nx\nb\nscratch_head\nb\n\n",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert [(r.image_sha256, r.label, r.annotator) for r in fake.labels] == [
        (SHAS[0], ingestion_pb2.LABEL_GOOD, "ana"),
        (SHAS[1], ingestion_pb2.LABEL_BAD, "ana"),
        (SHAS[2], ingestion_pb2.LABEL_BAD, "ana"),
    ]
    assert fake.labels[1].defect_type == "scratch_head"
    assert not fake.labels[0].HasField("defect_type")
    assert not fake.labels[2].HasField("defect_type")
    assert "type g, b or q" in result.stdout
    assert "labeled 3 this time" in result.stdout
    saved = tmp_path / f"{SHAS[0][:12]}-{SHAS[0][:4]}.png"
    assert saved.read_bytes() == b"\x89PNG " + SHAS[0].encode()


def test_next_stops_on_q(labeling: tuple[FakeLabeling, str], tmp_path: Path) -> None:
    fake, address = labeling
    result = screwops(
        "label", "next", "--dataset", "screws", "--save-dir", str(tmp_path),
        "--address", address, input="q\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert fake.labels == []


def test_next_json_reserves_one_image_without_asking(
    labeling: tuple[FakeLabeling, str], tmp_path: Path
) -> None:
    _, address = labeling
    result = screwops(
        "label", "next", "--dataset", "screws", "--save-dir", str(tmp_path),
        "--address", address, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    task = json.loads(result.stdout)
    assert task["image_sha256"] == SHAS[0]
    assert "image" not in task
    assert Path(task["saved_to"]).exists()


def test_next_with_nothing_to_label_exits_4(labeling: tuple[FakeLabeling, str]) -> None:
    fake, address = labeling
    fake.unlabeled.clear()
    result = screwops("label", "next", "--dataset", "screws", "--address", address)
    assert result.exit_code == 4
    assert "nothing to label" in result.stderr


def test_review_list_and_submit(labeling: tuple[FakeLabeling, str]) -> None:
    fake, address = labeling
    listed = screwops("label", "review", "list", "--line", "line-3", "--address", address)
    assert listed.exit_code == 0, listed.output
    for shown in ("insp-1", "line-3/cam-a", "DEFECT", "near threshold", "screw-classifier v4"):
        assert shown in listed.stdout

    as_json = screwops("label", "review", "list", "--address", address, "--json")
    assert json.loads(as_json.stdout)["review_items"][0]["inspection_id"] == "insp-1"

    submitted = screwops(
        "label", "review", "submit", "insp-1", "--label", "bad", "--defect-type", "thread_side",
        "--reviewer", "bo", "--address", address,
    )  # fmt: skip
    assert submitted.exit_code == 0, submitted.output
    assert "the model agreed" in submitted.stdout
    review = fake.reviews[-1]
    assert (review.label, review.defect_type, review.reviewer) == (
        ingestion_pb2.LABEL_BAD,
        "thread_side",
        "bo",
    )

    unknown = screwops(
        "label", "review", "submit", "insp-2", "--label", "good", "--address", address
    )
    assert unknown.exit_code == 4
    bad_label = screwops("label", "review", "submit", "insp-1", "--label", "meh")
    assert bad_label.exit_code == 2
