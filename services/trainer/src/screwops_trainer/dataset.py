"""What a run is fed: a validated version's labeled images, in validation's split, as arrays.

A version's three documents (manifest, label set, split) are joined here into one row per split
image, and the rows' digest is checked against the one ``dataset.validated`` announced: that
digest is part of the run's identity, so the trainer must never train on rows that do not hash to
it. The pixels go through ``screwops_imaging``'s :func:`decode` and :func:`preprocess`, the same
functions the gateway uses, so a model is served exactly the input it was trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from screwops_contracts.datasets import Label, LabelSet, Manifest, Split, SplitName, version_prefix
from screwops_errors import IntegrityError, InvalidInputError
from screwops_imaging import decode, preprocess

__all__ = [
    "Example",
    "Images",
    "Targets",
    "arrays",
    "check_digest",
    "dataset_digest",
    "examples",
    "labels_key",
    "manifest_key",
    "pixels",
]

Images = npt.NDArray[np.float32]
Targets = npt.NDArray[np.float32]


def manifest_key(dataset_id: str, version: int) -> str:
    """Where ingestion wrote the version's manifest (datasets bucket)."""
    return f"{version_prefix(dataset_id, version)}/manifest.json"


def labels_key(dataset_id: str, version: int) -> str:
    """Where labeling wrote the version's label set (datasets bucket).

    ``dataset.validated`` names only the split; the label set's place is fixed per version by the
    contract (see :class:`screwops_contracts.datasets.LabelSet`).
    """
    return f"{version_prefix(dataset_id, version)}/labels.json"


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
    version = (split.dataset_id, split.version)
    for name, document in (("manifest", manifest), ("label set", labels)):
        if (document.dataset_id, document.version) != version:
            raise InvalidInputError(
                f"the {name} is for {document.dataset_id} v{document.version}, "
                f"not {split.dataset_id} v{split.version}"
            )
    images = {image.sha256: image for image in manifest.images}
    first: dict[str, tuple[Label, str | None]] = {}
    for given in labels.labels:
        first.setdefault(given.sha256, (given.label, given.defect_type))
    rows = []
    for sha256, name in sorted(split.assignments.items()):
        if sha256 not in images or sha256 not in first:
            missing = "manifest" if sha256 not in images else "label set"
            raise InvalidInputError(f"the split names image {sha256}, which the {missing} lacks")
        label, defect_type = first[sha256]
        rows.append(Example(sha256, images[sha256].key, label, defect_type, name))
    return rows


def dataset_digest(rows: Sequence[Example]) -> str:
    """sha256 over the canonical JSON of sorted (image sha256, label, defect type, split) rows.

    Validation's definition of ``dataset_digest`` (its ``split.dataset_digest``), recomputed
    from the documents the run actually reads; a unit test holds the two equal.
    """
    table = sorted([r.sha256, r.label.value, r.defect_type, r.split.value] for r in rows)
    canonical = json.dumps(table, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_digest(rows: Sequence[Example], announced: str, *, where: str) -> None:
    """Refuse to train on rows other than those ``dataset.validated`` announced.

    Raises:
        IntegrityError: the documents under ``where`` hash to another digest.
    """
    actual = dataset_digest(rows)
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
