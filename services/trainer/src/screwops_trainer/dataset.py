"""What a run is fed: a validated version's labeled images, in validation's split, as arrays.

A version's three documents (manifest, label set, split) are joined into one row per split image
(:func:`screwops_contracts.datasets.labeled_split`, as the evaluator joins them), and the rows'
digest (validation's :func:`~screwops_contracts.datasets.dataset_digest`) is checked against the
one ``dataset.validated`` announced: that digest is part of the run's identity, so the trainer
must never train on rows that do not hash to it. The pixels go through ``screwops_imaging``'s
:func:`decode` and :func:`preprocess`, the same functions the gateway uses, so a model is served
exactly the input it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
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
from screwops_imaging import decode, preprocess

__all__ = [
    "Example",
    "Images",
    "Targets",
    "arrays",
    "check_digest",
    "examples",
    "pixels",
]

Images = npt.NDArray[np.float32]
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


def pixels(data: bytes) -> Images:
    """The network's input for one stored image (decode and preprocess, as serving does)."""
    return preprocess(decode(data).image)


def arrays(
    rows: Sequence[Example], inputs: dict[str, Images], split: SplitName
) -> tuple[Images, Targets]:
    """The images of one split stacked into a batch, with their targets, in the rows' order.

    Raises:
        InvalidInputError: the split holds no image (nothing to fit or to stop early on).
    """
    chosen = [r for r in rows if r.split is split]
    if not chosen:
        raise InvalidInputError(f"the {split.value} split is empty")
    images: Images = np.stack([inputs[r.sha256] for r in chosen])
    targets: Targets = np.array([r.target for r in chosen], dtype=np.float32)
    return images, targets
