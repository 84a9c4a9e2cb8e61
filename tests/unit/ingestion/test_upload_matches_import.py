"""The client's upload and the server-side import of one tree make the same dataset: every image
with the same filename, label, defect type and origin split, and the same counts. The upload's
stream is the one ``screwops ingest`` builds, fed to the real servicer over in-memory stores."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, cast

import pytest
from screwops.v1 import ingestion_pb2
from screwops_cli import upload
from screwops_contracts.datasets import Bucket, Label, Manifest
from screwops_contracts.layouts import LabelMap, Layout
from screwops_ingestion.config import Limits, Rules
from screwops_ingestion.grpc_api import Context, IngestionApi
from screwops_ingestion.service import IngestionService, Outcome

from tests.fakes import FakeContext, FakeObjects, RecordingBus
from tests.support import png
from tests.unit.ingestion.fakes import FakeStore

TREES: dict[str, tuple[dict[str, bytes], Layout, LabelMap]] = {
    "mvtec": (
        {
            "train/good/000.png": png(seed=1),
            "train/not-good/000.png": png(seed=2),
            "test/good/000.png": png(seed=3),
            "test/scratch_head/000.png": png(seed=4),
            "test/thread_side/001.png": png(seed=5),
            "ground_truth/scratch_head/000_mask.png": png(seed=6),
            "train/good/broken.png": b"not an image",
        },
        Layout.AUTO,
        {},
    ),
    "class folders": (
        {
            "Defective/a.png": png(seed=7),
            "fine/b.png": png(seed=8),
            "ok/c.png": png(seed=9),
            "loose.png": png(seed=10),
        },
        Layout.AUTO,
        {"defective": Label.BAD, "fine": Label.GOOD},
    ),
    "csv": (
        {
            "images/a.png": png(seed=11),
            "images/b.png": png(seed=12),
            "labels.csv": b"filename,label\nimages/a.png,ng\nimages/b.png,good\nx.png,good\n",
        },
        Layout.CSV,
        {},
    ),
}


def servicer(objects: FakeObjects, root: Path) -> tuple[IngestionService, IngestionApi]:
    rules = Rules(
        limits=Limits(max_bytes=50_000, max_pixels=512 * 512, concurrency=4),
        import_roots=(str(root),),
    )
    service = IngestionService(FakeStore(), objects, RecordingBus("ingestion").publish, rules=rules)
    return service, IngestionApi(service)


async def stream(requests: Iterable[ingestion_pb2.UploadRequest]) -> AsyncIterator[Any]:
    for request in requests:
        yield request


def unwatched(step: int) -> None:
    """Progress that nobody shows."""


def images(objects: FakeObjects, dataset: str) -> list[tuple[Any, ...]]:
    manifest = Manifest.model_validate_json(
        objects.objects[(Bucket.DATASETS, f"{dataset}/v1/manifest.json")]
    )
    return sorted(
        (i.sha256, i.filename, i.label, i.defect_type, i.origin_split) for i in manifest.images
    )


@pytest.mark.parametrize("name", TREES)
async def test_an_upload_records_what_a_server_side_import_records(
    tmp_path: Path, name: str
) -> None:
    files, layout, label_map = TREES[name]
    for relative, data in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(data)
    objects = FakeObjects()
    service, api = servicer(objects, tmp_path)

    imported = await service.import_path("imported", str(tmp_path), layout, label_map)
    with upload.walk(tmp_path, layout, label_map) as (source, planned):
        hashed = upload.hash_all(source, planned, workers=3, advance=unwatched)
        sendable = [h for h in hashed if h.problem is None]
        requests = list(upload.requests(source, "uploaded", sendable, workers=3, advance=unwatched))
    uploaded = await api.Upload(stream(requests), cast(Context, FakeContext()))

    assert images(objects, "uploaded") == images(objects, "imported")
    assert any(image[2] is not None for image in images(objects, "imported"))
    local_refusals = len(hashed) - len(sendable)
    assert (
        uploaded.accepted_count,
        uploaded.duplicate_count,
        uploaded.refused_count + local_refusals,
    ) == (
        imported.count(Outcome.ACCEPTED),
        imported.count(Outcome.DUPLICATE),
        imported.count(Outcome.REFUSED),
    )
