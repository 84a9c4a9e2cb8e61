"""Reading a directory or zip of images in the layouts real screw data comes in.

- class folders: ``good/``, ``not-good/`` or ``bad/`` (any depth below the root);
- MVTec AD: ``train/good``, ``test/good``, ``test/<defect_type>`` (``ground_truth`` masks skipped);
- a CSV of ``filename,label`` next to the images.

Each file becomes an :class:`IncomingFile` with the label its place implies, so the rest of
ingestion never cares where the files came from.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from screwops_contracts.datasets import LABEL_WORDS, Label, parse_label
from screwops_errors import InvalidInputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
GOOD_FOLDERS = frozenset(word for word, label in LABEL_WORDS.items() if label is Label.GOOD)
BAD_FOLDERS = frozenset(word for word, label in LABEL_WORDS.items() if label is Label.BAD)


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


class Source:
    """A directory or a zip file, read the same way."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise InvalidInputError(f"import path {path} does not exist")
        self.path = path
        self._zip = zipfile.ZipFile(path) if path.is_file() else None
        if path.is_file() and not zipfile.is_zipfile(path):
            raise InvalidInputError(f"import path {path} is neither a directory nor a zip file")

    def names(self) -> list[str]:
        """Every file's path relative to the root, POSIX style, sorted."""
        if self._zip is not None:
            return sorted(n for n in self._zip.namelist() if not n.endswith("/"))
        return sorted(
            p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
        )

    def size(self, name: str) -> int:
        """Uncompressed size, known before reading (so a zip bomb is never inflated)."""
        if self._zip is not None:
            return self._zip.getinfo(name).file_size
        return (self.path / name).stat().st_size

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def detect(names: list[str]) -> Layout:
    """The layout a tree most plausibly uses (MVTec before class folders: it has both words)."""
    parts = [PurePosixPath(n).parts for n in names]
    if any(p[-1].lower().endswith(".csv") for p in parts):
        return Layout.CSV
    if any(len(p) >= 3 and p[-3] in ("train", "test") for p in parts):
        return Layout.MVTEC
    if any(len(p) >= 2 and p[-2].lower() in GOOD_FOLDERS | BAD_FOLDERS for p in parts):
        return Layout.CLASS_FOLDERS
    raise InvalidInputError(
        "cannot tell the layout: expected class folders (good/, bad/ or not-good/), "
        "MVTec (train/good, test/<defect>) or a CSV of filename,label"
    )


def read(source: Source, *, max_bytes: int, layout: Layout = Layout.AUTO) -> Iterator[IncomingFile]:
    """Yield the images of ``source`` with their labels, reading one file at a time."""
    names = source.names()
    chosen = detect(names) if layout == Layout.AUTO else layout
    if chosen == Layout.CSV:
        yield from _from_csv(source, names, max_bytes)
        return
    for name in names:
        path = PurePosixPath(name)
        if path.suffix.lower() not in IMAGE_SUFFIXES or "ground_truth" in path.parts:
            continue
        label, defect = _label_of(path, chosen)
        yield _file(source, name, max_bytes, label=label, defect_type=defect)


def _file(
    source: Source, name: str, max_bytes: int, *, label: Label | None, defect_type: str | None
) -> IncomingFile:
    size = source.size(name)
    if size > max_bytes:
        return IncomingFile(
            filename=name, data=b"", problem=f"file is {size} bytes, over the limit of {max_bytes}"
        )
    return IncomingFile(name, source.read(name), label=label, defect_type=defect_type)


def _label_of(path: PurePosixPath, layout: Layout) -> tuple[Label | None, str | None]:
    folder = path.parent.name.lower() if len(path.parts) > 1 else ""
    if layout == Layout.MVTEC:
        if folder == "good":
            return Label.GOOD, None
        if len(path.parts) >= 3 and path.parts[-3] == "test":
            return Label.BAD, folder
        return None, None
    if folder in GOOD_FOLDERS:
        return Label.GOOD, None
    if folder in BAD_FOLDERS:
        return Label.BAD, None
    return None, None


def _from_csv(source: Source, names: list[str], max_bytes: int) -> Iterator[IncomingFile]:
    [csv_name, *others] = [n for n in names if n.lower().endswith(".csv")]
    if others:
        raise InvalidInputError(f"more than one CSV in the import: {[csv_name, *others]}")
    base = PurePosixPath(csv_name).parent
    rows = csv.reader(io.StringIO(source.read(csv_name).decode("utf-8-sig")))
    for number, row in enumerate(rows, start=1):
        if not row or (
            number == 1 and [c.strip().lower() for c in row[:2]] == ["filename", "label"]
        ):
            continue
        where = f"{csv_name} row {number}"
        if len(row) < 2:
            yield IncomingFile(where, b"", problem=f"{where}: expected filename,label")
            continue
        name = (base / row[0].strip()).as_posix() if str(base) != "." else row[0].strip()
        if name not in names:
            yield IncomingFile(name, b"", problem=f"{where}: no file {row[0].strip()!r}")
            continue
        try:
            label = parse_label(row[1])
        except InvalidInputError as exc:
            yield IncomingFile(name, b"", problem=f"{where}: {exc.message}")
            continue
        yield _file(source, name, max_bytes, label=label, defect_type=None)
