"""What a run is fed: a validated version's labeled images, in validation's split, as arrays.

A version's three documents (manifest, label set, split) are joined into one row per split image
(:func:`screwops_contracts.datasets.labeled_split`, as the evaluator joins them), and the rows'
digest (validation's :func:`~screwops_contracts.datasets.dataset_digest`) is checked against the
one ``dataset.validated`` announced: that digest is part of the run's identity, so the trainer
must never train on rows that do not hash to it. The pixels go through ``screwops_imaging``'s
:func:`decode` and :func:`fit_frame`, the same functions the gateway uses, so a model is trained
on exactly the frames it is served; finding the screw is part of the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image
from screwops_contracts.datasets import (
    Label,
    LabelSet,
    Manifest,
    Split,
    SplitName,
    dataset_digest,
    labeled_split,
)
from screwops_errors import IntegrityError, InvalidInputError
from screwops_imaging import decode, fit_frame

__all__ = [
    "Example",
    "Images",
    "Targets",
    "arrays",
    "check_digest",
    "decoded",
    "examples",
    "frame_size",
]

MAX_FRAME_SIZE = 1024
"""The largest frame a model takes: a 1024-px camera keeps every pixel; a larger image is area
averaged to it (fit_frame), which bounds the alignment's cost per inspection."""

Images = npt.NDArray[np.uint8]
Targets = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Example:
    """One image of the split with its label: a row of what the run is fed."""

    sha256: str
    key: str
    label: Label
    defect_type: str | None
    split: SplitName

    @property
    def target(self) -> float:
        """What the network learns to output: the probability that the screw is defective."""
        return 1.0 if self.label is Label.BAD else 0.0


def examples(manifest: Manifest, labels: LabelSet, split: Split) -> list[Example]:
    """Every image of ``split`` with its manifest entry and its (first) label, by sha256.

    Raises:
        InvalidInputError: the documents are of different versions, or the split names an image
            the manifest or the label set lacks.
    """
    return [
        Example(row.sha256, row.image.key, row.label, row.defect_type, row.split)
        for row in labeled_split(manifest, labels, split)
    ]


def check_digest(rows: Sequence[Example], announced: str, *, where: str) -> None:
    """Refuse to train on rows other than those ``dataset.validated`` announced: their
    :func:`~screwops_contracts.datasets.dataset_digest`, validation's definition, recomputed
    from the documents the run actually reads.

    Raises:
        IntegrityError: the documents under ``where`` hash to another digest.
    """
    actual = dataset_digest((r.sha256, r.label, r.defect_type, r.split) for r in rows)
    if actual != announced:
        raise IntegrityError(
            f"{where}: manifest, labels and split hash to {actual}, but validation announced "
            f"{announced}; the version's documents changed after validation"
        )


def decoded(data: bytes) -> Image.Image:
    """One stored image, decoded to 8-bit grey as the gateway decodes it."""
    return decode(data).image


def frame_size(images: Sequence[Image.Image], *, largest: int = MAX_FRAME_SIZE) -> int:
    """The model's frame side: the most common longer side of ``images``, at most ``largest``
    (a line's camera gives one size; a stray image of another is fitted to it).

    Raises:
        InvalidInputError: no images.
    """
    if not images:
        raise InvalidInputError("no images to take the model's frame size from")
    sides, counts = np.unique([max(image.size) for image in images], return_counts=True)
    return int(min(int(sides[int(np.argmax(counts))]), largest))


def arrays(
    rows: Sequence[Example], inputs: dict[str, Image.Image], split: SplitName, size: int
) -> tuple[Images, Targets]:
    """The frames of one split (each fitted to ``size``) stacked into a batch, with their
    targets, in the rows' order. Blocking: resizing a large image costs milliseconds.

    Raises:
        InvalidInputError: the split holds no image (nothing to fit or to stop early on).
    """
    chosen = [r for r in rows if r.split is split]
    if not chosen:
        raise InvalidInputError(f"the {split.value} split is empty")
    images: Images = np.stack([fit_frame(inputs[r.sha256], size) for r in chosen])
    targets: Targets = np.array([r.target for r in chosen], dtype=np.float32)
    return images, targets
