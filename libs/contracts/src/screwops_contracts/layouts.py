"""Reading a directory or zip of images in the layouts real screw data comes in.

- class folders: ``good/``, ``not-good/`` or ``bad/`` (any depth below the root);
- MVTec AD: ``train/good``, ``train/not-good``, ``test/good``, ``test/<defect_type>``
  (``ground_truth`` masks skipped), each image remembering whether it came from ``train/`` or
  ``test/``;
- a CSV of ``filename,label`` next to the images.

Each file becomes an :class:`IncomingFile` with the label its place implies, so the rest of
ingestion never cares where the files came from. It lives in a lib, not in ingestion, because
two readers share it: ingestion's server-side import and ``screwops ingest``'s upload, which
must label a tree exactly as the import would. A class folder whose name is neither one of
:data:`~screwops_contracts.datasets.LABEL_WORDS` nor in the import's label map refuses the whole
import before anything is read: images arriving unlabeled in silence would only surface weeks
later as a labeling queue nobody expected. Images directly in the root stay allowed, unlabeled:
they are what the labeling flow is for.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

from screwops_errors import InvalidInputError

from screwops_contracts.datasets import LABEL_WORDS, Label, OriginSplit, parse_label

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
PROVIDER_SPLITS: tuple[OriginSplit, ...] = ("train", "test")
LabelMap = Mapping[str, Label]
SYMLINK = "a symbolic link: not followed (import the files themselves)"
NOT_A_FILE = "not a regular file"
# What reading one damaged zip entry raises: a bad CRC or header (BadZipFile), a broken deflate
# stream (zlib.error), a truncated one (EOFError), an unknown compression
# (NotImplementedError) or a password (RuntimeError).
_BAD_ENTRY = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError)


class Layout(StrEnum):
    """How labels are encoded in a directory tree."""

    AUTO = "auto"
    CLASS_FOLDERS = "class_folders"
    MVTEC = "mvtec"
    CSV = "csv"


@dataclass(frozen=True)
class IncomingFile:
    """One file offered for ingestion, with the label its location or CSV row gives it.

    ``problem`` is set (and ``data`` empty) when the file is refused before it is even read:
    too large, or named by a CSV row that cannot be honoured.
    """

    filename: str
    data: bytes
    label: Label | None = None
    defect_type: str | None = None
    problem: str | None = None
    origin_split: OriginSplit | None = None


@dataclass(frozen=True)
class Place:
    """What a file's place in the tree says about it; ``unknown`` names a class folder that
    says nothing the import understands."""

    label: Label | None = None
    defect_type: str | None = None
    origin_split: OriginSplit | None = None
    unknown: str | None = None


class Source:
    """A directory or a zip file, read the same way.

    Symbolic links are never followed, in a directory or a zip: a link under an import root can
    point anywhere the service can read. Each one, and anything else that is not a regular file
    (a FIFO would block the read for ever), is listed in ``refused`` with the reason instead.
    """

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise InvalidInputError(f"import path {path} does not exist")
        self.path = path
        if path.is_file() and not zipfile.is_zipfile(path):
            raise InvalidInputError(f"import path {path} is neither a directory nor a zip file")
        self._zip = zipfile.ZipFile(path) if path.is_file() else None
        self.refused: dict[str, str] = {}
        self._names = self._zip_names(self._zip) if self._zip is not None else self._tree_names()

    def _zip_names(self, archive: zipfile.ZipFile) -> list[str]:
        names = []
        for info in archive.infolist():
            if info.is_dir():
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                self.refused[info.filename] = SYMLINK
            else:
                names.append(info.filename)
        return sorted(names)

    def _tree_names(self) -> list[str]:
        names = []
        for folder, dirs, files in os.walk(self.path, followlinks=False):
            here = Path(folder)
            for name in [*dirs, *files]:
                entry = here / name
                relative = entry.relative_to(self.path).as_posix()
                mode = entry.lstat().st_mode
                if stat.S_ISLNK(mode):
                    self.refused[relative] = SYMLINK
                elif stat.S_ISREG(mode):
                    names.append(relative)
                elif not stat.S_ISDIR(mode):
                    self.refused[relative] = NOT_A_FILE
        return sorted(names)

    def names(self) -> list[str]:
        """Every regular file's path relative to the root, POSIX style, sorted."""
        return self._names

    def size(self, name: str) -> int:
        """Uncompressed size, known before reading (so a zip bomb is never inflated)."""
        if self._zip is not None:
            return self._zip.getinfo(name).file_size
        return (self.path / name).lstat().st_size

    def read(self, name: str) -> bytes:
        """The file's bytes; a file swapped for a link since it was listed is not followed."""
        if self._zip is not None:
            return self._zip.read(name)
        fd = os.open(self.path / name, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as file:
            return file.read()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def detect(names: list[str]) -> Layout:
    """The layout a tree most plausibly uses (MVTec before class folders: it has both words).

    Any image in a folder makes it class folders, so folders with other names are reported by
    name (see :func:`read`) rather than as a layout nobody can tell.
    """
    parts = [PurePosixPath(n).parts for n in names]
    if any(p[-1].lower().endswith(".csv") for p in parts):
        return Layout.CSV
    if any(len(p) >= 3 and p[-3] in PROVIDER_SPLITS for p in parts):
        return Layout.MVTEC
    if any(len(p) >= 2 and PurePosixPath(*p).suffix.lower() in IMAGE_SUFFIXES for p in parts):
        return Layout.CLASS_FOLDERS
    raise InvalidInputError(
        "cannot tell the layout: expected class folders (good/, bad/ or not-good/), "
        "MVTec (train/good, test/<defect>) or a CSV of filename,label"
    )


@dataclass(frozen=True)
class Planned:
    """One file of a source before it is read: its name and what its place says about it, or
    why it is refused unread (a link, a CSV row that cannot be honoured)."""

    name: str
    place: Place = field(default_factory=Place)
    problem: str | None = None


def plan(
    source: Source,
    *,
    layout: Layout = Layout.AUTO,
    label_map: LabelMap | None = None,
    max_csv_bytes: int = 16 * 1024 * 1024,
) -> list[Planned]:
    """Every file ``source`` offers, with its label, defect type and origin split, unread.

    What a server-side import and a client's upload both decide from the tree alone, so the
    two label the same files the same way. ``label_map`` names the label of folders (and CSV
    words) outside :data:`LABEL_WORDS`, by lower-case name; it overrides the built-in words.
    The links and other entries the source refused come first, each with its reason.

    Raises:
        InvalidInputError: the layout cannot be told, a class folder's name is neither a
            known word nor mapped, or a CSV index is over ``max_csv_bytes`` or unreadable
            (raised here, before a single image is read).
    """
    words = {**LABEL_WORDS, **(label_map or {})}
    names = source.names()
    refused = [Planned(name, problem=why) for name, why in source.refused.items()]
    chosen = detect(names) if layout == Layout.AUTO else layout
    if chosen == Layout.CSV:
        rows = _csv_rows(source, names, max_csv_bytes)
        return [*refused, *_from_csv(source, names, rows, words)]
    places = {
        name: _place(PurePosixPath(name), chosen, words)
        for name in names
        if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES
        and "ground_truth" not in PurePosixPath(name).parts
    }
    unknown = sorted({place.unknown for place in places.values() if place.unknown})
    if unknown:
        raise InvalidInputError(
            f"class folder(s) {', '.join(unknown)} name no label (known: "
            f"{', '.join(LABEL_WORDS)}); nothing was imported. Name their labels with a label "
            f"map, e.g. --label-map {PurePosixPath(unknown[0]).name.lower()}=bad (or =good)"
        )
    return [*refused, *(Planned(name, place) for name, place in places.items())]


def read(
    source: Source,
    *,
    max_bytes: int,
    layout: Layout = Layout.AUTO,
    label_map: LabelMap | None = None,
    max_csv_bytes: int = 16 * 1024 * 1024,
) -> Iterator[IncomingFile]:
    """The images of ``source`` with their labels (see :func:`plan`), read one file at a time
    as iterated; a zip entry that cannot be read (bad CRC, broken compression) is refused
    alone, the rest still imported.

    Raises:
        InvalidInputError: as :func:`plan`, before a single image is read.
    """
    planned = plan(source, layout=layout, label_map=label_map, max_csv_bytes=max_csv_bytes)
    return (load(source, entry, max_bytes) for entry in planned)


def load(source: Source, entry: Planned, max_bytes: int) -> IncomingFile:
    """``entry``'s bytes with its place; refused unread when planned so or over ``max_bytes``."""
    if entry.problem is not None:
        return IncomingFile(entry.name, b"", problem=entry.problem)
    size = source.size(entry.name)
    if size > max_bytes:
        return IncomingFile(
            filename=entry.name,
            data=b"",
            problem=f"file is {size} bytes, over the limit of {max_bytes}",
        )
    try:
        data = source.read(entry.name)
    except _BAD_ENTRY as exc:
        return IncomingFile(filename=entry.name, data=b"", problem=f"unreadable: {exc}")
    return IncomingFile(
        entry.name,
        data,
        label=entry.place.label,
        defect_type=entry.place.defect_type,
        origin_split=entry.place.origin_split,
    )


def _place(path: PurePosixPath, layout: Layout, words: LabelMap) -> Place:
    """MVTec: ``<train|test>/<class>/<file>``, where a test folder that names no label is a
    defect type (MVTec's convention) and a train folder that names none is unknown. Elsewhere
    (and in class-folder layouts) the parent folder is the class; a file in the root has none."""
    if len(path.parts) < 2:
        return Place()
    folder = path.parent.name.lower()
    provider = path.parts[-3] if len(path.parts) >= 3 else None
    if layout == Layout.MVTEC and provider in PROVIDER_SPLITS:
        origin: OriginSplit = "train" if provider == "train" else "test"
        if folder in words:
            return Place(words[folder], None, origin)
        if origin == "test":
            return Place(Label.BAD, folder, origin)
        return Place(unknown=f"{provider}/{path.parent.name}")
    if folder in words:
        return Place(words[folder])
    return Place(unknown=path.parent.as_posix())


def _csv_rows(source: Source, names: list[str], max_bytes: int) -> tuple[str, list[list[str]]]:
    """The import's one CSV, by name, and its rows; read whole, so its size is capped first."""
    found = [n for n in names if n.lower().endswith(".csv")]
    if not found:
        raise InvalidInputError("no CSV of filename,label in the import")
    [csv_name, *others] = found
    if others:
        raise InvalidInputError(f"more than one CSV in the import: {[csv_name, *others]}")
    size = source.size(csv_name)
    if size > max_bytes:
        raise InvalidInputError(
            f"{csv_name} is {size} bytes, over the CSV limit of {max_bytes}; nothing was imported"
        )
    try:
        text = source.read(csv_name).decode("utf-8-sig")
    except (*_BAD_ENTRY, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{csv_name} cannot be read: {exc}") from exc
    return csv_name, list(csv.reader(io.StringIO(text)))


def _from_csv(
    source: Source,
    names: list[str],
    index: tuple[str, list[list[str]]],
    words: LabelMap,
) -> Iterator[Planned]:
    csv_name, rows = index
    base = PurePosixPath(csv_name).parent
    for number, row in enumerate(rows, start=1):
        if not row or (
            number == 1 and [c.strip().lower() for c in row[:2]] == ["filename", "label"]
        ):
            continue
        where = f"{csv_name} row {number}"
        if len(row) < 2:
            yield Planned(where, problem=f"{where}: expected filename,label")
            continue
        name = (base / row[0].strip()).as_posix() if str(base) != "." else row[0].strip()
        if name in source.refused:
            continue  # refused already, with its reason
        if name not in names:
            yield Planned(name, problem=f"{where}: no file {row[0].strip()!r}")
            continue
        word = row[1].strip().lower()
        try:
            label = words[word] if word in words else parse_label(row[1])
        except InvalidInputError as exc:
            yield Planned(name, problem=f"{where}: {exc.message}")
            continue
        yield Planned(name, Place(label))
