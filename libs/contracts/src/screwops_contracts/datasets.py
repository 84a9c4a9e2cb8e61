"""Dataset artifacts that several services read: where they live and what they contain.

Events carry keys, not data: ``dataset.ingested`` names a manifest, ``dataset.labeled`` a label
set, ``dataset.validated`` a split. These models are those documents, written as JSON to MinIO by
their one producer and read by the services downstream.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from screwops_errors import InvalidInputError


class Bucket(StrEnum):
    """MinIO buckets and what goes in each."""

    IMAGES = "images"  # raw images, content-addressed: raw/<sha[:2]>/<sha>
    DATASETS = "datasets"  # per version: manifest, labels, split, validation reports
    MODELS = "models"  # SavedModels, training histories, evaluation reports
    INSPECTIONS = "inspections"  # images the gateway keeps (sampled or low confidence)
    DROP = "ingest-drop"  # upstream systems drop files here; MinIO notifies ingestion


class Label(StrEnum):
    """The two classes the model tells apart."""

    GOOD = "good"
    BAD = "bad"


LABEL_WORDS: dict[str, Label] = {
    "good": Label.GOOD,
    "ok": Label.GOOD,
    "bad": Label.BAD,
    "not-good": Label.BAD,
    "not_good": Label.BAD,
    "ng": Label.BAD,
    "defect": Label.BAD,
}
"""The words exports and folders use for the two classes (MVTec says ``good``/``not-good``)."""


def parse_label(word: str) -> Label:
    """The class a word of an export or a folder name stands for, in one vocabulary everywhere.

    Raises:
        InvalidInputError: the word is empty or not one of :data:`LABEL_WORDS`.
    """
    cleaned = word.strip().lower()
    if not cleaned:
        raise InvalidInputError("no label")
    if cleaned not in LABEL_WORDS:
        raise InvalidInputError(
            f"unknown label {word.strip()!r}: expected one of {', '.join(LABEL_WORDS)}"
        )
    return LABEL_WORDS[cleaned]


DEFECT_TYPES = (
    "manipulated_front",
    "scratch_head",
    "scratch_neck",
    "thread_side",
    "thread_top",
)


class Document(BaseModel):
    """Base of the JSON documents: immutable once written, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestImage(Document):
    """One image of a dataset version."""

    sha256: str = Field(description="Content address.", examples=["ab12…"])
    key: str = Field(description="Key in the images bucket.", examples=["raw/ab/ab12…"])
    filename: str = Field(description="Name it arrived with.", examples=["train/good/000.png"])
    width: int = Field(ge=1, examples=[1024])
    height: int = Field(ge=1, examples=[1024])
    format: str = Field(examples=["PNG"])
    label: Label | None = Field(
        default=None, description="Label given by the import layout, if any (provenance import)."
    )
    defect_type: str | None = Field(
        default=None, description="Defect type from the layout (MVTec folder).", examples=[None]
    )


class Manifest(Document):
    """The images of one immutable dataset version (``<dataset>/v<n>/manifest.json``)."""

    dataset_id: str
    version: int = Field(ge=1)
    created_at: AwareDatetime
    images: list[ManifestImage] = Field(description="Sorted by sha256.")


class ImageLabel(Document):
    """The label an image carries into training, and where it came from."""

    sha256: str
    label: Label
    defect_type: str | None = None
    source: Literal["import", "file", "manual", "review"] = Field(
        description="import: the layout; file: a CSV or Label Studio export; manual: a person "
        "in the labeling UI; review: a reviewed inspection."
    )
    annotator: str | None = None
    labeled_at: AwareDatetime


class LabelSet(Document):
    """The labels of one dataset version (``<dataset>/v<n>/labels.json``)."""

    dataset_id: str
    version: int = Field(ge=1)
    labels: list[ImageLabel] = Field(description="Sorted by sha256; excluded images are absent.")
    excluded: list[str] = Field(
        default_factory=list, description="sha256 of images excluded unlabeled by an operator."
    )


class SplitName(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


class Split(Document):
    """The deterministic stratified split of a version (``<dataset>/v<n>/split.json``)."""

    dataset_id: str
    version: int = Field(ge=1)
    seed: int
    assignments: dict[str, SplitName] = Field(description="sha256 -> split.")


def version_prefix(dataset_id: str, version: int) -> str:
    """Where a version's documents live in the datasets bucket."""
    return f"{dataset_id}/v{version}"
