"""``screwops ingest`` against a fake ingestion servicer: the upload walks every layout with the
labels an import gives, hashes what it reads, sends only what the dataset lacks and reports the
rest as an import would; ``--server-side`` still sends the path; a label map naming an unknown
label, or a class folder naming none, stops the command before anything is sent."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from screwops.v1 import ingestion_pb2, ingestion_pb2_grpc
from screwops_cli import upload
from screwops_contracts.datasets import Label
from screwops_contracts.layouts import SYMLINK, Layout, Place, Planned

from tests.support import png
from tests.unit.cli.support import screwops, serving

GOOD, BAD = ingestion_pb2.LABEL_GOOD, ingestion_pb2.LABEL_BAD
TRAIN, TEST = ingestion_pb2.ORIGIN_SPLIT_TRAIN, ingestion_pb2.ORIGIN_SPLIT_TEST


@dataclass
class FakeIngestion(ingestion_pb2_grpc.IngestionServiceServicer):
    """Holds the hashes it was given (or sent); answers each Upload as a new version."""

    held: set[str] = field(default_factory=set)
    imports: list[Any] = field(default_factory=list)
    uploads: list[list[ingestion_pb2.UploadRequest]] = field(default_factory=list)
    asked: list[list[str]] = field(default_factory=list)

    def Import(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.imports.append(request)
        return ingestion_pb2.ImportResult(
            dataset_id=request.dataset_id, dataset_version=1, accepted_count=2, created=True
        )

    def Upload(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        requests = list(request_iterator)
        self.uploads.append(requests)
        files = [r.file for r in requests[1:]]
        for file in files:
            self.held.add(hashlib.sha256(file.content).hexdigest())
        return ingestion_pb2.ImportResult(
            dataset_id=requests[0].header.dataset_id,
            dataset_version=len(self.uploads),
            accepted_count=len(files),
            created=bool(files),
            files=[
                ingestion_pb2.FileOutcome(
                    filename=f.filename,
                    sha256=hashlib.sha256(f.content).hexdigest(),
                    status=ingestion_pb2.FILE_STATUS_ACCEPTED,
                )
                for f in files
            ],
        )

    def FindImages(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.asked.append(list(request.sha256))
        return ingestion_pb2.FindImagesResponse(
            present=[sha for sha in request.sha256 if sha in self.held]
        )

    def GetDataset(self, request: Any, context: Any) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by ingest")

    def ListDatasets(self, request: Any, context: Any) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by ingest")

    def sent(self) -> list[ingestion_pb2.UploadFile]:
        return [r.file for requests in self.uploads for r in requests[1:]]


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def mvtec(root: Path) -> Path:
    return tree(
        root,
        {
            "train/good/000.png": png(seed=1),
            "train/not-good/000.png": png(seed=2),
            "test/good/000.png": png(seed=3),
            "test/scratch_head/000.png": png(seed=4),
            "ground_truth/scratch_head/000_mask.png": png(seed=5),
        },
    )


def ingest(fake: FakeIngestion, *args: str) -> Any:
    with serving(ingestion_pb2_grpc.add_IngestionServiceServicer_to_server, fake) as address:
        return screwops("ingest", *args, "--address", address)


def placed(file: ingestion_pb2.UploadFile) -> tuple[Any, ...]:
    label = file.label if file.HasField("label") else None
    return file.filename, label, file.defect_type, file.origin_split


def test_an_mvtec_tree_is_uploaded_with_the_labels_defect_types_and_splits_of_its_places(
    tmp_path: Path,
) -> None:
    fake = FakeIngestion()

    result = ingest(fake, str(mvtec(tmp_path)), "--dataset", "screws")

    assert result.exit_code == 0, result.output
    [requests] = fake.uploads
    assert requests[0].header.dataset_id == "screws"
    assert not requests[0].header.HasField("default_label")
    assert sorted(placed(f) for f in fake.sent()) == [
        ("test/good/000.png", GOOD, "", TEST),
        ("test/scratch_head/000.png", BAD, "scratch_head", TEST),
        ("train/good/000.png", GOOD, "", TRAIN),
        ("train/not-good/000.png", BAD, "", TRAIN),
    ]
    assert fake.sent()[0].content == (tmp_path / fake.sent()[0].filename).read_bytes()
    assert "screws v1 (new)" in result.output
    assert "sent 4 file(s); 0 already in screws" in result.output
    assert fake.imports == []


def test_a_zip_is_uploaded_as_its_folder_would_be(tmp_path: Path) -> None:
    folder = mvtec(tmp_path / "tree")
    archive = tmp_path / "screws.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.rglob("*.png")):
            out.write(path, path.relative_to(folder).as_posix())
    from_folder, from_zip = FakeIngestion(), FakeIngestion()

    assert ingest(from_folder, str(folder)).exit_code == 0
    assert ingest(from_zip, str(archive)).exit_code == 0

    assert sorted(placed(f) for f in from_zip.sent()) == sorted(
        placed(f) for f in from_folder.sent()
    )
    assert {f.content for f in from_zip.sent()} == {f.content for f in from_folder.sent()}


def test_class_folders_take_their_labels_from_the_label_map(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {"Defective/a.png": png(seed=1), "fine/b.png": png(seed=2), "root.png": png(seed=3)},
    )
    fake = FakeIngestion()

    result = ingest(fake, str(root), "--label-map", "defective=bad,fine=good")

    assert result.exit_code == 0, result.output
    assert sorted(placed(f) for f in fake.sent()) == [
        ("Defective/a.png", BAD, "", 0),
        ("fine/b.png", GOOD, "", 0),
        ("root.png", None, "", 0),
    ]


def test_a_csv_layout_labels_by_its_rows_and_reports_the_rows_it_cannot_honour(
    tmp_path: Path,
) -> None:
    root = tree(tmp_path, {"a.png": png(seed=1), "b.png": png(seed=2)})
    (root / "labels.csv").write_text("filename,label\na.png,ok\nb.png,ng\nmissing.png,good\n")
    fake = FakeIngestion()

    result = ingest(fake, str(root), "--layout", "csv", "--json")

    assert result.exit_code == 0, result.output
    assert sorted(placed(f) for f in fake.sent()) == [("a.png", GOOD, "", 0), ("b.png", BAD, "", 0)]
    answer = json.loads(result.output)
    assert (answer["accepted_count"], answer["refused_count"]) == ("2", "1")
    [refused] = [f for f in answer["files"] if f["status"] == "FILE_STATUS_REFUSED"]
    assert refused["filename"] == "missing.png"
    assert "labels.csv row 4: no file 'missing.png'" in refused["reason"]


def test_a_layout_forced_on_the_command_line_is_honoured(tmp_path: Path) -> None:
    root = tree(tmp_path, {"train/good/a.png": png(seed=1)})
    fake = FakeIngestion()

    result = ingest(fake, str(root), "--layout", "class_folders")

    assert result.exit_code == 0, result.output
    assert [placed(f) for f in fake.sent()] == [("train/good/a.png", GOOD, "", 0)]


def test_a_rerun_sends_only_what_the_dataset_lacks(tmp_path: Path) -> None:
    root = mvtec(tmp_path)
    fake = FakeIngestion(held={hashlib.sha256(png(seed=1)).hexdigest()})

    first = ingest(fake, str(root), "--json")
    again = ingest(fake, str(root))

    assert first.exit_code == 0, first.output
    answer = json.loads(first.output)
    assert (answer["accepted_count"], answer["duplicate_count"]) == ("3", "1")
    [held] = [f for f in answer["files"] if f["status"] == "FILE_STATUS_DUPLICATE"]
    assert (held["filename"], held["reason"]) == ("train/good/000.png", "already in the dataset")
    assert [len(requests) - 1 for requests in fake.uploads] == [3, 0]
    assert again.exit_code == 0, again.output
    assert "sent 0 file(s); 4 already in screws" in again.output


def test_hash_all_hashes_every_readable_file_and_refuses_the_rest_unread(tmp_path: Path) -> None:
    root = tree(tmp_path, {f"good/{n}.png": png(seed=n) for n in range(20)})
    os.symlink(root / "good" / "0.png", root / "good" / "link.png")
    steps: list[int] = []

    with upload.walk(root, Layout.AUTO, {}) as (source, planned):
        hashed = upload.hash_all(source, planned, workers=4, advance=steps.append)

    assert len(steps) == len(planned) == 21
    [link] = [h for h in hashed if h.problem is not None]
    assert (link.entry.name, link.problem, link.sha256) == ("good/link.png", SYMLINK, "")
    for h in hashed:
        if h.problem is None:
            data = (root / h.entry.name).read_bytes()
            assert (h.sha256, h.size) == (hashlib.sha256(data).hexdigest(), len(data))
            assert h.entry.place == Place(Label.GOOD)


def test_a_file_too_large_for_a_message_is_refused_unsent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upload, "MAX_FILE_BYTES", 100)
    root = tree(tmp_path, {"good/a.png": png(seed=1)})
    fake = FakeIngestion()

    result = ingest(fake, str(root), "--json")

    assert result.exit_code == 0, result.output
    assert fake.sent() == []
    [refused] = json.loads(result.output)["files"]
    assert "over the limit of 100" in refused["reason"]


def test_the_stream_reads_ahead_in_order(tmp_path: Path) -> None:
    root = tree(tmp_path, {f"good/{n:02}.png": png(seed=n) for n in range(10)})
    sent: list[int] = []
    with upload.walk(root, Layout.AUTO, {}) as (source, planned):
        hashed = upload.hash_all(source, planned, workers=3, advance=lambda _: None)
        stream = list(upload.requests(source, "d", hashed, workers=3, advance=sent.append))

    assert stream[0].header.dataset_id == "d"
    assert [r.file.filename for r in stream[1:]] == [p.name for p in planned]
    assert sum(sent) == sum(h.size for h in hashed)


def test_the_server_side_import_sends_the_path_layout_and_label_map(tmp_path: Path) -> None:
    fake = FakeIngestion()

    result = ingest(
        fake,
        str(tmp_path),
        "--server-side",
        "--layout",
        "mvtec",
        "--label-map",
        "Defective=bad, fine=ok",
    )

    assert result.exit_code == 0, result.output
    [request] = fake.imports
    assert request.path == str(tmp_path.resolve())
    assert request.layout == ingestion_pb2.LAYOUT_MVTEC
    assert dict(request.label_map) == {"defective": BAD, "fine": GOOD}
    assert fake.uploads == []


@pytest.mark.parametrize("mode", [(), ("--server-side",)])
def test_a_label_map_naming_an_unknown_label_exits_2_and_sends_nothing(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    fake = FakeIngestion()

    result = ingest(fake, str(mvtec(tmp_path)), *mode, "--label-map", "defective=broken")

    assert result.exit_code == 2
    assert "--label-map: label map entry 'defective=broken': unknown label 'broken'" in (
        result.output
    )
    assert (fake.imports, fake.uploads, fake.asked) == ([], [], [])


def test_a_class_folder_naming_no_label_exits_2_and_sends_nothing(tmp_path: Path) -> None:
    root = tree(tmp_path, {"good/a.png": png(seed=1), "defective/b.png": png(seed=2)})
    fake = FakeIngestion()

    result = ingest(fake, str(root))

    assert result.exit_code == 2
    assert "class folder(s) defective name no label" in result.output
    assert "--label-map defective=bad" in result.output
    assert (fake.uploads, fake.asked) == ([], [])


def test_a_path_that_is_neither_a_folder_nor_a_zip_exits_2(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("screws")

    result = ingest(FakeIngestion(), str(tmp_path / "notes.txt"))

    assert result.exit_code == 2
    assert "neither a directory nor a zip file" in result.output


def test_planned_problems_are_never_read(tmp_path: Path) -> None:
    with upload.walk(tree(tmp_path, {"good/a.png": png()}), Layout.AUTO, {}) as (source, _):
        [hashed] = upload.hash_all(
            source, [Planned("gone.png", problem="refused")], workers=1, advance=lambda _: None
        )
    assert (hashed.problem, hashed.sha256) == ("refused", "")
