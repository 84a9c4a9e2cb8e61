"""Test versions for validation: small synthetic images (a bright or dark disc on a shaded
background), stored with a manifest and a label set through any object store, unit or real."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from screwops_contracts import DatasetLabeled, DatasetLabeledPayload
from screwops_contracts.datasets import (
    Bucket,
    ImageLabel,
    Label,
    LabelSet,
    Manifest,
    ManifestImage,
    OriginSplit,
    version_prefix,
)
from screwops_storage import StoredObject, sha256_hex

Pixels = npt.NDArray[np.uint8]


def circle_pixels(seed: int, *, bright: bool, size: int = 64) -> Pixels:
    """A disc at a random place and radius, bright (a 'good' screw) or dark (a 'bad' one)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    background = 110 + 30 * ((x * np.cos(angle) + y * np.sin(angle)) / size)
    cx, cy = rng.uniform(size * 0.25, size * 0.75, 2)
    radius = rng.uniform(size * 0.12, size * 0.3)
    disc = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    level = rng.uniform(200, 240) if bright else rng.uniform(20, 60)
    pixels = np.where(disc, level, background) + rng.normal(0, 6, (size, size))
    clipped: Pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    return clipped


def encode(pixels: Pixels, *, note: str = "", mode: str = "L") -> bytes:
    """PNG bytes of ``pixels``; a ``note`` changes the bytes but not the picture."""
    out = io.BytesIO()
    info = PngInfo()
    if note:
        info.add_text("note", note)
    Image.fromarray(pixels).convert(mode).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def circle_png(seed: int, *, bright: bool, size: int = 64, note: str = "") -> bytes:
    """PNG bytes of :func:`circle_pixels`, with ``note`` in a text chunk."""
    return encode(circle_pixels(seed, bright=bright, size=size), note=note)


@dataclass(frozen=True)
class File:
    """One image of a test version; ``label`` None leaves it unlabeled."""

    filename: str
    data: bytes
    label: Label | None
    defect_type: str | None = None
    origin_split: OriginSplit | None = None


def good(seed: int, *, note: str = "") -> File:
    return File(f"good/{seed:03d}.png", circle_png(seed, bright=True, note=note), Label.GOOD)


def bad(seed: int, defect_type: str | None = "scratch_head", *, note: str = "") -> File:
    return File(
        f"bad/{seed:03d}.png", circle_png(seed, bright=False, note=note), Label.BAD, defect_type
    )


def balanced(per_class: int, *, offset: int = 0) -> list[File]:
    """``per_class`` good and bad images with distinct seeds."""
    return [good(offset + i) for i in range(per_class)] + [
        bad(offset + 1000 + i) for i in range(per_class)
    ]


class Writer(Protocol):
    async def put_content(
        self, bucket: str, data: bytes, *, prefix: str, content_type: str = ...
    ) -> StoredObject: ...

    async def put_named(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ...
    ) -> StoredObject: ...


async def stage_version(
    objects: Writer, dataset_id: str, files: list[File], *, version: int = 1
) -> DatasetLabeled:
    """Store the images, the manifest and the label set, and return the labeling event."""
    now = datetime.now(UTC)
    images = []
    for file in files:
        stored = await objects.put_content(Bucket.IMAGES, file.data, prefix="raw")
        images.append(
            ManifestImage(
                sha256=sha256_hex(file.data),
                key=stored.key,
                filename=file.filename,
                width=64,
                height=64,
                format="PNG",
                origin_split=file.origin_split,
            )
        )
    prefix = version_prefix(dataset_id, version)
    manifest = Manifest(
        dataset_id=dataset_id,
        version=version,
        created_at=now,
        images=sorted(images, key=lambda i: i.sha256),
    )
    labels = LabelSet(
        dataset_id=dataset_id,
        version=version,
        labels=sorted(
            {
                sha256_hex(f.data): ImageLabel(
                    sha256=sha256_hex(f.data),
                    label=f.label,
                    defect_type=f.defect_type,
                    source="manual",
                    labeled_at=now,
                )
                for f in files
                if f.label is not None
            }.values(),
            key=lambda label: label.sha256,
        ),
    )
    await objects.put_named(
        Bucket.DATASETS, f"{prefix}/manifest.json", manifest.model_dump_json().encode()
    )
    labels_key = f"{prefix}/labels.json"
    await objects.put_named(Bucket.DATASETS, labels_key, labels.model_dump_json().encode())
    counts: dict[str, int] = {}
    for label in labels.labels:
        counts[label.label.value] = counts.get(label.label.value, 0) + 1
    return DatasetLabeled.origin(
        DatasetLabeledPayload(
            dataset_id=dataset_id,
            version=version,
            labels_key=labels_key,
            label_counts=counts,
            excluded_count=0,
        ),
        producer="labeling",
    )
