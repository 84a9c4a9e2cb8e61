"""Dataset artifacts that several services read: where they live and what they contain.

Events carry keys, not data: ``dataset.ingested`` names a manifest, ``dataset.labeled`` a label
set, ``dataset.validated`` a split. These models are those documents, written as JSON to MinIO by
their one producer and read by the services downstream; the pure functions at the end are how
every reader finds, parses and joins them, and the one definition of a version's digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from screwops_errors import InvalidInputError

from screwops_contracts.limits import MAX_FILE_PATH_CHARS

M = TypeVar("M", bound=BaseModel)


class Bucket(StrEnum):
    """MinIO buckets and what goes in each."""

    IMAGES = "images"  # raw images, content-addressed: raw/<sha[:2]>/<sha>
    DATASETS = "datasets"  # per version: manifest, labels, split, validation reports
    MODELS = "models"  # SavedModels, training histories, evaluation reports
    INSPECTIONS = "inspections"  # images the gateway keeps (sampled or low confidence)
    DROP = "ingest-drop"  # upstream systems drop files here; MinIO notifies ingestion
    DEAD_LETTERS = "dead-letters"  # bodies of dead letters too large for Kafka (the bus')


READY_MARKER = "_READY"
"""The object a drop's writer puts last, as ``<dataset>/_READY`` in :attr:`Bucket.DROP`, to close
a batch: the files under ``<dataset>/`` (labeled by a ``good``/``bad`` folder, or not) become a
new version of the dataset."""


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


def parse_label_map(text: str) -> dict[str, Label]:
    """``defective=bad,ok=good`` as {folder or word: label}: how an import names the classes of
    folders (or CSV words) that are not in :data:`LABEL_WORDS`. Words are matched lower-case.

    Raises:
        InvalidInputError: an entry is not ``word=label``, names a word twice, or names a label
            that is not one of :data:`LABEL_WORDS`.
    """
    mapping: dict[str, Label] = {}
    for entry in (part.strip() for part in text.split(",")):
        word, sign, label = entry.partition("=")
        word = word.strip().lower()
        if not sign or not word:
            raise InvalidInputError(f"label map entry {entry!r}: expected word=label")
        if word in mapping:
            raise InvalidInputError(f"label map names {word!r} twice")
        try:
            mapping[word] = parse_label(label)
        except InvalidInputError as exc:
            raise InvalidInputError(f"label map entry {entry!r}: {exc.message}") from exc
    return mapping


DEFECT_TYPES = (
    "manipulated_front",
    "scratch_head",
    "scratch_neck",
    "thread_side",
    "thread_top",
)


OriginSplit = Literal["train", "test"]
"""Where a provider's layout put an image: its own ``train/`` or ``test/`` folder."""


class Document(BaseModel):
    """Base of the JSON documents: immutable once written, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestImage(Document):
    """One image of a dataset version."""

    sha256: str = Field(description="Content address.", examples=["ab12…"])
    key: str = Field(description="Key in the images bucket.", examples=["raw/ab/ab12…"])
    filename: str = Field(
        max_length=MAX_FILE_PATH_CHARS,
        description="Name it arrived with.",
        examples=["train/good/000.png"],
    )
    width: int = Field(ge=1, examples=[1024])
    height: int = Field(ge=1, examples=[1024])
    format: str = Field(examples=["PNG"])
    label: Label | None = Field(
        default=None, description="Label given by the import layout, if any (provenance import)."
    )
    defect_type: str | None = Field(
        default=None, description="Defect type from the layout (MVTec folder).", examples=[None]
    )
    origin_split: OriginSplit | None = Field(
        default=None,
        description="The split the provider put the image in (MVTec's train/ or test/), if the "
        "layout said; validation never trains on a provider's test image where it can help it.",
        examples=["test"],
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
    """The stratified split of a version (``<dataset>/v<n>/split.json``): each image's split is
    decided once, from its content hash, and kept by every later version."""

    dataset_id: str
    version: int = Field(ge=1)
    seed: int
    assignments: dict[str, SplitName] = Field(description="sha256 -> split.")
    inherited_from: int | None = Field(
        default=None,
        description="The earlier version whose split this one carries forward: each of its "
        "images keeps its split here, so an image tested once is never trained on later.",
    )


def version_prefix(dataset_id: str, version: int) -> str:
    """Where a version's documents live in the datasets bucket."""
    return f"{dataset_id}/v{version}"


def manifest_key(dataset_id: str, version: int) -> str:
    """Where ingestion writes a version's :class:`Manifest` (datasets bucket)."""
    return f"{version_prefix(dataset_id, version)}/manifest.json"


def labels_key(dataset_id: str, version: int) -> str:
    """Where labeling writes a version's :class:`LabelSet` (datasets bucket).

    ``dataset.validated`` names only the split; the label set's place is fixed per version.
    """
    return f"{version_prefix(dataset_id, version)}/labels.json"


def split_key(dataset_id: str, version: int) -> str:
    """Where a version's :class:`Split` is found from the version alone (datasets bucket).

    Validation writes each attempt's split under that attempt's keys and copies the recorded one
    here; ``dataset.validated`` names the recorded attempt's own key.
    """
    return f"{version_prefix(dataset_id, version)}/split.json"


def parse_document(model: type[M], key: str, body: bytes) -> M:
    """``body``, read from ``datasets/<key>``, as the document ``model``.

    Raises:
        InvalidInputError: the bytes are not a valid ``model``.
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidInputError(
            f"datasets/{key} is not a valid {model.__name__}: {exc.error_count()} error(s)"
        ) from exc


def check_version(
    dataset_id: str, version: int, *documents: tuple[str, Manifest | LabelSet | Split]
) -> None:
    """Refuse named documents that belong to another version than ``dataset_id`` v``version``.

    Raises:
        InvalidInputError: a document names another dataset or version.
    """
    for name, document in documents:
        if (document.dataset_id, document.version) != (dataset_id, version):
            raise InvalidInputError(
                f"the {name} is for {document.dataset_id} v{document.version}, "
                f"not {dataset_id} v{version}"
            )


def first_labels(labels: LabelSet) -> dict[str, ImageLabel]:
    """Each labeled image's label, by sha256: the first one where the set lists several."""
    first: dict[str, ImageLabel] = {}
    for label in labels.labels:
        first.setdefault(label.sha256, label)
    return first


@dataclass(frozen=True)
class SplitImage:
    """One image of a version's split with its (first) label: a row of what a run is fed."""

    sha256: str
    split: SplitName
    label: Label
    defect_type: str | None  # the label's (the manifest's, from the import layout, is in image)
    image: ManifestImage


def labeled_split(
    manifest: Manifest,
    labels: LabelSet,
    split: Split,
    *,
    splits: Container[SplitName] = frozenset(SplitName),
) -> list[SplitImage]:
    """The images the split assigns to one of ``splits``, each with its manifest entry and its
    (first) label, sorted by sha256.

    Raises:
        InvalidInputError: the documents are of different versions, or the split assigns one of
            ``splits`` an image the manifest or the label set lacks.
    """
    check_version(split.dataset_id, split.version, ("manifest", manifest), ("label set", labels))
    images = {image.sha256: image for image in manifest.images}
    first = first_labels(labels)
    rows = []
    for sha256, name in sorted(split.assignments.items()):
        if name not in splits:
            continue
        if sha256 not in images or sha256 not in first:
            missing = "manifest" if sha256 not in images else "label set"
            raise InvalidInputError(f"the split names image {sha256}, which the {missing} lacks")
        label = first[sha256]
        rows.append(SplitImage(sha256, name, label.label, label.defect_type, images[sha256]))
    return rows


DigestRow = tuple[str, Label, str | None, SplitName]
"""One image in a version's digest: its sha256, label, defect type and split."""


def dataset_digest(rows: Iterable[DigestRow]) -> str:
    """sha256 over the canonical JSON of sorted (image sha256, label, defect type, split) rows.

    It names exactly what a training run is fed: the same images with the same labels in the
    same splits give the same digest, whatever the dataset's name or version. Validation
    announces it in ``dataset.validated``; the trainer recomputes it from the documents it reads.
    """
    table = sorted(
        [sha256, label.value, defect_type, split.value]
        for sha256, label, defect_type, split in rows
    )
    return hashlib.sha256(canonical_json(table)).hexdigest()


def canonical_json(value: Any) -> bytes:
    """One byte string per value (sorted keys, no spaces), so digests and rewrites are stable."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
