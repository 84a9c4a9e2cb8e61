"""Ingestion's core with in-memory stores: one path for every entry point."""

from __future__ import annotations

import asyncio
import contextlib
import io
import stat
import zipfile
from pathlib import Path

import pytest
from pydantic import ValidationError
from screwops_bus import outbox
from screwops_contracts import DatasetIngested
from screwops_contracts.datasets import Bucket, Label, Manifest
from screwops_contracts.layouts import SYMLINK, IncomingFile, Layout
from screwops_contracts.limits import MAX_FILE_PATH_CHARS, MAX_NAME_CHARS
from screwops_contracts.minio import BucketNotification
from screwops_errors import InvalidInputError, PermissionDeniedError, UnavailableError
from screwops_ingestion.config import Limits, Rules
from screwops_ingestion.service import IngestionService, Outcome

from tests.fakes import FakeObjects, RecordingBus, relayed
from tests.support import dataset_ingested, png
from tests.unit.ingestion.fakes import FakeStore


@pytest.fixture
def parts() -> tuple[FakeStore, FakeObjects, RecordingBus]:
    return FakeStore(), FakeObjects(), RecordingBus("ingestion")


def service(
    parts: tuple[FakeStore, FakeObjects, RecordingBus],
    *,
    roots: list[str] | None = None,
    max_csv_bytes: int = 10_000,
) -> IngestionService:
    store, objects, published = parts
    return IngestionService(
        store,
        objects,
        published.publish,
        rules=Rules(
            limits=Limits(
                max_bytes=50_000,
                max_pixels=512 * 512,
                concurrency=4,
                max_csv_bytes=max_csv_bytes,
            ),
            import_roots=tuple(["/"] if roots is None else roots),
        ),
    )


def files(*seeds: int, label: Label | None = Label.GOOD) -> list[IncomingFile]:
    return [IncomingFile(f"{s}.png", png(32, seed=s), label=label) for s in seeds]


async def test_bad_files_are_refused_one_by_one_and_the_rest_go_in(
    parts: tuple[FakeStore, FakeObjects, RecordingBus],
) -> None:
    store, objects, published = parts
    batch = [
        *files(1, 2),
        IncomingFile("corrupt.png", png(32, seed=3)[:100]),
        IncomingFile("notes.txt", b"not an image"),
        IncomingFile("big.png", b"\x89PNG" + bytes(60_000)),
        IncomingFile("empty.png", b""),
    ]
    result = await service(parts).ingest("screws", batch, source="upload")

    assert (result.version, result.created) == (1, True)
    assert [f.status for f in result.files] == [Outcome.ACCEPTED] * 2 + [Outcome.REFUSED] * 4
    reasons = {f.filename: f.reason for f in result.files if f.status == Outcome.REFUSED}
    assert reasons["corrupt.png"].startswith("corrupt or truncated PNG")
    assert reasons["notes.txt"].startswith("not an image")
    assert "over the limit of 50000" in reasons["big.png"]
    assert reasons["empty.png"] == "empty image: 0 bytes"
    assert {r.filename for r in store.refusals.values()} == set(reasons)
    [event] = published
    assert isinstance(event, DatasetIngested)
    assert (event.payload.image_count, event.payload.refused_count) == (2, 4)
    manifest = Manifest.model_validate_json(
        objects.objects[(Bucket.DATASETS, event.payload.manifest_key)]
    )
    assert [i.filename for i in sorted(manifest.images, key=lambda i: i.filename)] == [
        "1.png",
        "2.png",
    ]


async def test_offering_the_same_files_again_creates_nothing(
    parts: tuple[FakeStore, FakeObjects, RecordingBus],
) -> None:
    store, _, published = parts
    ingestion = service(parts)
    await ingestion.ingest("screws", files(1, 2), source="upload")
    again = await ingestion.ingest("screws", files(1, 2), source="import")

    assert (again.version, again.created) == (1, False)
    assert [f.status for f in again.files] == [Outcome.DUPLICATE] * 2
    assert len(store.versions) == 1
    assert len(published) == 1


async def test_a_new_version_holds_the_earlier_images_and_the_new_ones(
    parts: tuple[FakeStore, FakeObjects, RecordingBus],
) -> None:
    published = parts[2]
    ingestion = service(parts)
    await ingestion.ingest("screws", files(1, 2), source="upload")
    result = await ingestion.ingest("screws", files(2, 3, 3), source="upload")

    assert (result.version, result.created) == (2, True)
    assert [f.status for f in result.files] == [
        Outcome.DUPLICATE,
        Outcome.ACCEPTED,
        Outcome.DUPLICATE,
    ]
    latest = published[-1]
    assert isinstance(latest, DatasetIngested)
    assert (latest.payload.version, latest.payload.image_count) == (2, 3)
    assert latest.payload.duplicate_count == 2
    assert latest.correlation_id != published[0].correlation_id


async def test_an_upload_whose_announcement_kafka_refused_is_announced_by_the_relay(
    parts: tuple[FakeStore, FakeObjects, RecordingBus],
) -> None:
    """Issue 18, finding 1: the version is made; its event, refused at that moment, goes out
    once Kafka is back, without a restart and without another request."""
    store, _, published = parts
    published.failures.append(ConnectionError("kafka went away"))

    result = await service(parts).ingest("screws", files(1), source="upload")
    assert (result.version, result.created) == (1, True)
    [version] = store.versions.values()
    assert not published
    assert [a.id for a in version.pending] == [str(version.event.event_id)]

    await relayed(store, published, 1)
    assert published == [version.event]


async def test_a_bucket_drop_whose_announcement_kafka_refused_does_not_stall_the_dataset(
    parts: tuple[FakeStore, FakeObjects, RecordingBus],
) -> None:
    """Issue 18, finding 1, as reproduced: Kafka down when ``_READY`` cuts the version; the
    handler's retry finds nothing new, yet ``dataset.ingested`` arrives once Kafka is back."""
    store, objects, published = parts
    ingestion = service(parts)
    objects.objects[(Bucket.DROP, "line9/good/a.png")] = png(32, seed=1)
    objects.objects[(Bucket.DROP, "line9/_READY")] = b""
    await ingestion.on_bucket_drop(notification("line9/good/a.png"))

    published.down = True
    for _ in range(2):  # the handler, and the bus's retry of it had it failed
        with contextlib.suppress(UnavailableError):
            await ingestion.on_bucket_drop(notification("line9/_READY"))
    assert not published
    assert [v.version for v in store.versions.values()] == [1]

    published.down = False
    await relayed(store, published, 1)
    [event] = published.of(DatasetIngested)
    assert (event.payload.dataset_id, event.payload.version) == ("line9", 1)
    assert event == store.versions["line9@v1"].event


def tree(root: Path, *names: str) -> None:
    """A small PNG at each of ``names`` (relative to ``root``), each picture its own."""
    for seed, name in enumerate(names, start=1):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png(32, seed=seed))


def manifest_of(objects: FakeObjects, dataset_id: str) -> Manifest:
    return Manifest.model_validate_json(
        objects.objects[(Bucket.DATASETS, f"{dataset_id}/v1/manifest.json")]
    )


async def test_an_import_reads_the_mvtec_layout_with_labels_defect_types_and_origin_splits(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], tmp_path: Path
) -> None:
    _, objects, published = parts
    tree(
        tmp_path,
        "train/good/000.png",
        "train/not-good/000.png",
        "test/good/000.png",
        "test/scratch_head/000.png",
        "ground_truth/scratch_head/000_mask.png",
    )

    result = await service(parts).import_path("mvtec", str(tmp_path), Layout.AUTO)

    assert result.count(Outcome.ACCEPTED) == 4
    images = {
        i.filename: (i.label, i.defect_type, i.origin_split)
        for i in manifest_of(objects, "mvtec").images
    }
    assert images == {
        "train/good/000.png": (Label.GOOD, None, "train"),
        "train/not-good/000.png": (Label.BAD, None, "train"),
        "test/good/000.png": (Label.GOOD, None, "test"),
        "test/scratch_head/000.png": (Label.BAD, "scratch_head", "test"),
    }
    assert isinstance(published[0], DatasetIngested)
    assert published[0].payload.labeled_by_layout == 4


@pytest.mark.parametrize(
    ("names", "unknown"),
    [
        (("good/a.png", "defective/b.png", "fine/c.png"), "class folder(s) defective, fine"),
        (("train/good/a.png", "train/rejects/b.png"), "class folder(s) train/rejects"),
    ],
)
async def test_class_folders_that_name_no_label_refuse_the_whole_import(
    parts: tuple[FakeStore, FakeObjects, RecordingBus],
    tmp_path: Path,
    names: tuple[str, ...],
    unknown: str,
) -> None:
    store, objects, published = parts
    tree(tmp_path, *names)
    with pytest.raises(InvalidInputError, match="--label-map") as refused:
        await service(parts).import_path("folders", str(tmp_path), Layout.AUTO)
    assert unknown in refused.value.message
    assert "nothing was imported" in refused.value.message
    assert (objects.objects, store.versions, published) == ({}, {}, [])


async def test_a_label_map_names_the_labels_of_other_folders_and_csv_words(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], tmp_path: Path
) -> None:
    _, objects, _ = parts
    tree(tmp_path / "folders", "Defective/a.png", "ok/b.png", "loose.png")
    mapping = {"defective": Label.BAD}
    await service(parts).import_path("folders", str(tmp_path / "folders"), Layout.AUTO, mapping)
    assert {i.filename: i.label for i in manifest_of(objects, "folders").images} == {
        "Defective/a.png": Label.BAD,
        "ok/b.png": Label.GOOD,
        "loose.png": None,  # in the root: unlabeled, for the labeling service
    }

    tree(tmp_path / "csv", "x.png")
    (tmp_path / "csv" / "labels.csv").write_text("filename,label\nx.png,Reject\n")
    await service(parts).import_path(
        "csv", str(tmp_path / "csv"), Layout.AUTO, {"reject": Label.BAD}
    )
    assert [i.label for i in manifest_of(objects, "csv").images] == [Label.BAD]


async def test_a_zip_with_a_csv_refuses_only_its_bad_rows(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], tmp_path: Path
) -> None:
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("imgs/a.png", png(32, seed=1))
        z.writestr("imgs/b.png", png(32, seed=2))
        z.writestr("imgs/labels.csv", "filename,label\na.png,good\nb.png,maybe\nmissing.png,bad\n")
    result = await service(parts).import_path("zipped", str(archive), Layout.AUTO)

    outcomes = {f.filename: (f.status, f.reason) for f in result.files}
    assert outcomes["imgs/a.png"] == (Outcome.ACCEPTED, "")
    assert outcomes["imgs/b.png"][0] == Outcome.REFUSED
    assert "unknown label 'maybe'" in outcomes["imgs/b.png"][1]
    assert outcomes["imgs/missing.png"] == (
        Outcome.REFUSED,
        "imgs/labels.csv row 4: no file 'missing.png'",
    )


async def test_class_folders_give_labels(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], tmp_path: Path
) -> None:
    _, objects, _ = parts
    for folder, seed in [("good", 1), ("not-good", 2)]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{seed}.png").write_bytes(png(32, seed=seed))
    await service(parts).import_path("folders", str(tmp_path), Layout.CLASS_FOLDERS)
    manifest = Manifest.model_validate_json(
        objects.objects[(Bucket.DATASETS, "folders/v1/manifest.json")]
    )
    assert {i.filename: i.label for i in manifest.images} == {
        "good/1.png": Label.GOOD,
        "not-good/2.png": Label.BAD,
    }


async def test_an_import_outside_the_allowed_roots_is_refused(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], tmp_path: Path
) -> None:
    with pytest.raises(PermissionDeniedError, match="outside the import roots"):
        await service(parts, roots=[str(tmp_path / "allowed")]).import_path(
            "x", str(tmp_path / "allowed" / ".." / "other"), Layout.AUTO
        )


async def test_nothing_is_importable_until_import_roots_are_configured(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], tmp_path: Path
) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "a.png").write_bytes(png(32, seed=1))

    with pytest.raises(PermissionDeniedError, match="no import roots are configured"):
        await service(parts, roots=[]).import_path("x", str(tmp_path), Layout.AUTO)


async def test_symbolic_links_are_refused_with_the_reason_not_followed(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], tmp_path: Path
) -> None:
    _, objects, _ = parts
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png(32, seed=9))
    root = tmp_path / "import"
    (root / "good").mkdir(parents=True)
    (root / "good" / "a.png").write_bytes(png(32, seed=1))
    (root / "good" / "link.png").symlink_to(outside / "secret.png")
    (root / "bad").symlink_to(outside, target_is_directory=True)

    result = await service(parts).import_path("links", str(root), Layout.AUTO)

    outcomes = {f.filename: (f.status, f.reason) for f in result.files}
    assert outcomes == {
        "bad": (Outcome.REFUSED, SYMLINK),
        "good/link.png": (Outcome.REFUSED, SYMLINK),
        "good/a.png": (Outcome.ACCEPTED, ""),
    }
    assert [i.filename for i in manifest_of(objects, "links").images] == ["good/a.png"]


async def test_a_link_inside_a_zip_is_refused_too(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], tmp_path: Path
) -> None:
    archive = tmp_path / "links.zip"
    link = zipfile.ZipInfo("good/passwd.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("good/a.png", png(32, seed=1))
        z.writestr(link, "/etc/passwd")

    result = await service(parts).import_path("zipped-link", str(archive), Layout.AUTO)

    outcomes = {f.filename: (f.status, f.reason) for f in result.files}
    assert outcomes["good/passwd.png"] == (Outcome.REFUSED, SYMLINK)
    assert outcomes["good/a.png"][0] == Outcome.ACCEPTED


async def test_a_corrupt_zip_entry_is_refused_alone_and_the_rest_imported(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], tmp_path: Path
) -> None:
    _, objects, _ = parts
    damaged = png(32, seed=2)
    archive = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("good/a.png", png(32, seed=1))
        z.writestr("good/b.png", damaged)
        z.writestr("good/c.png", png(32, seed=3))
    raw = bytearray(archive.read_bytes())
    raw[raw.index(damaged[200:240]) + 10] ^= 0xFF  # b.png's CRC no longer matches
    archive.write_bytes(bytes(raw))

    result = await service(parts).import_path("damaged", str(archive), Layout.AUTO)

    outcomes = {f.filename: (f.status, f.reason) for f in result.files}
    assert outcomes["good/b.png"][0] == Outcome.REFUSED
    assert outcomes["good/b.png"][1].startswith("unreadable: Bad CRC-32")
    assert sorted(i.filename for i in manifest_of(objects, "damaged").images) == [
        "good/a.png",
        "good/c.png",
    ]


async def test_a_csv_over_its_limit_refuses_the_import_before_it_is_read(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(png(32, seed=1))
    (tmp_path / "labels.csv").write_text("filename,label\n" + "a.png,good\n" * 20)

    with pytest.raises(InvalidInputError, match="over the CSV limit of 100; nothing was"):
        await service(parts, max_csv_bytes=100).import_path("csv", str(tmp_path), Layout.AUTO)


@pytest.mark.parametrize("dataset_id", ["", "a/b", "../etc", ".hidden", "x" * 65])
async def test_a_bad_dataset_id_is_refused(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], dataset_id: str
) -> None:
    with pytest.raises(InvalidInputError, match="dataset id"):
        await service(parts).ingest(dataset_id, files(1), source="upload")


def notification(key: str) -> BucketNotification:
    return BucketNotification.model_validate(
        {
            "EventName": "s3:ObjectCreated:Put",
            "Key": f"{Bucket.DROP}/{key}",
            "Records": [
                {
                    "eventName": "s3:ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": str(Bucket.DROP)},
                        "object": {"key": key.replace("/", "%2F"), "sequencer": key},
                    },
                }
            ],
        }
    )


async def test_a_ready_marker_that_overtook_its_files_still_gets_the_whole_batch(
    parts: tuple[FakeStore, FakeObjects, RecordingBus],
) -> None:
    """MinIO's notifications are keyed by object, so ``_READY`` may be handled before some of
    its batch's files: the version must hold every file dropped before the marker anyway, and
    the late notifications add nothing."""
    _, objects, published = parts
    ingestion = service(parts)
    keys = ("line8/good/a.png", "line8/good/b.png", "line8/bad/c.png")
    for seed, key in enumerate(keys):
        objects.objects[(Bucket.DROP, key)] = png(32, seed=seed)
    objects.objects[(Bucket.DROP, "line8/_READY")] = b""

    await ingestion.on_bucket_drop(notification(keys[0]))
    await ingestion.on_bucket_drop(notification("line8/_READY"))
    for key in keys[1:]:
        await ingestion.on_bucket_drop(notification(key))
    await ingestion.on_bucket_drop(notification("line8/_READY"))

    [event] = published
    assert isinstance(event, DatasetIngested)
    assert (event.payload.image_count, event.payload.labeled_by_layout) == (3, 3)


async def test_bucket_drops_are_staged_until_the_ready_marker(
    parts: tuple[FakeStore, FakeObjects, RecordingBus],
) -> None:
    _, objects, published = parts
    ingestion = service(parts)
    objects.objects[(Bucket.DROP, "line7/good/a.png")] = png(32, seed=1)
    objects.objects[(Bucket.DROP, "line7/bad/b.png")] = png(32, seed=2)
    objects.objects[(Bucket.DROP, "line7/c.png")] = io.BytesIO(b"junk").getvalue()

    for key in ("line7/good/a.png", "line7/bad/b.png", "line7/c.png"):
        await ingestion.on_bucket_drop(notification(key))
    assert published == []

    await ingestion.on_bucket_drop(notification("line7/_READY"))
    [event] = published
    assert isinstance(event, DatasetIngested)
    assert (event.payload.source, event.payload.image_count) == ("bucket", 2)
    assert event.payload.labeled_by_layout == 2


async def test_an_upload_while_kafka_stalls_answers_and_leaves_its_event_to_the_relay(
    parts: tuple[FakeStore, FakeObjects, RecordingBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka away: the producer holds the send (on the real stack an upload answered after
    42 s, past the console's deadline); the version's event is left pending instead."""
    monkeypatch.setattr(outbox, "PUBLISH_NOW_S", 0.05)
    store, _, published = parts
    published.gate = asyncio.Event()

    result = await asyncio.wait_for(service(parts).ingest("screws", files(1), source="upload"), 1)

    assert result.version == 1
    assert not published
    published.gate.set()
    await relayed(store, published, 1)
    [event] = published.of(DatasetIngested)
    assert event == store.versions["screws@v1"].event


async def test_a_dropped_file_whose_name_is_over_the_limit_is_refused_naming_it(
    parts: tuple[FakeStore, FakeObjects, RecordingBus],
) -> None:
    """A manifest records each file's name: one past MAX_FILE_PATH_CHARS is refused by the
    limit (the refusal keeps the name cut to it), and the rest of the drop is ingested."""
    store, objects, published = parts
    ingestion = service(parts)
    long_key = "line6/good/" + "n" * MAX_FILE_PATH_CHARS + ".png"
    objects.objects[(Bucket.DROP, long_key)] = png(32, seed=1)
    objects.objects[(Bucket.DROP, "line6/good/a.png")] = png(32, seed=2)
    objects.objects[(Bucket.DROP, "line6/_READY")] = b""

    for key in (long_key, "line6/good/a.png", "line6/_READY"):
        await ingestion.on_bucket_drop(notification(key))

    [event] = published
    assert isinstance(event, DatasetIngested)
    assert event.payload.image_count == 1
    [refusal] = store.refusals.values()
    assert refusal.reason == (
        f"filename is {len(long_key)} characters, over the limit of {MAX_FILE_PATH_CHARS}"
    )
    assert len(refusal.filename) == MAX_FILE_PATH_CHARS


def test_an_event_envelope_bounds_its_producer_and_correlation_id() -> None:
    """An event is dead-lettered with the reason naming the field and its limit."""
    event = dataset_ingested("screws").model_dump(mode="json")
    for field in ("producer", "correlation_id"):
        with pytest.raises(ValidationError, match=f"{field}\\n.*at most {MAX_NAME_CHARS}"):
            DatasetIngested.model_validate({**event, field: "x" * (MAX_NAME_CHARS + 1)})
