"""Reading labels out of labeling tools' exports: a CSV, Label Studio's JSON and JSON-MIN.

Every format becomes the same list of :class:`LabelRow`; a row that cannot be read becomes a
:class:`RowProblem` with its position and the reason, so one bad row never spoils an import. Only
a file that is not the format at all (not UTF-8, not JSON, not a list) refuses the whole import.
Rows name images the way the tools do: by SHA-256, by the filename the image was ingested with, or
by the path or URL Label Studio stored (:class:`ImageIndex` resolves all three).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from screwops_contracts.datasets import Label, parse_label
from screwops_errors import InvalidInputError

__all__ = [
    "ImageIndex",
    "LabelFileFormat",
    "LabelRow",
    "ParsedLabels",
    "RowProblem",
    "defect_type_for",
    "digest_named_by",
    "read_labels",
]


# Column names a CSV header may use for what each row names, in order of preference.
_REFERENCE_COLUMNS = ("sha256", "filename", "file", "image", "path")
# Keys Label Studio's JSON-MIN uses for a Choices tag: its ``from_name`` in the labeling config.
_CHOICE_KEYS = ("choice", "choices", "label", "class")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Label Studio renames uploaded files to ``<8 hex digits>-<original name>``.
_UPLOAD_PREFIX = re.compile(r"[0-9a-f]{8}-(?P<name>.+)")


class LabelFileFormat(StrEnum):
    """The export formats ImportLabels reads."""

    CSV = "csv"
    LABEL_STUDIO_JSON = "label_studio_json"
    LABEL_STUDIO_JSON_MIN = "label_studio_json_min"


@dataclass(frozen=True)
class LabelRow:
    """One readable row: the image it names, its label, and who gave it (if the file says)."""

    row: int
    reference: str
    label: Label
    defect_type: str | None = None
    annotator: str | None = None


@dataclass(frozen=True)
class RowProblem:
    """A row that was not applied, for a person to fix: its position, what it named, and why."""

    row: int
    reference: str
    reason: str


Entry = tuple[int, str, Callable[[], LabelRow]]
"""A row's position, what it names (for problem reports) and how to read it."""


@dataclass(frozen=True)
class ParsedLabels:
    """What a file held: the rows that could be read and the problems with the others."""

    rows: list[LabelRow]
    problems: list[RowProblem]


def read_labels(fmt: LabelFileFormat, content: bytes) -> ParsedLabels:
    """Every row of an export, read or explained, so an import can report row by row.

    Raises:
        InvalidInputError: the content is not the named format at all.
    """
    if fmt is LabelFileFormat.CSV:
        entries = _csv_entries(content)
    else:
        read = _task_row if fmt is LabelFileFormat.LABEL_STUDIO_JSON else _min_row
        entries = (
            (row, _describe(item), partial(read, row, item))
            for row, item in enumerate(_json_list(content), start=1)
        )
    rows: list[LabelRow] = []
    problems: list[RowProblem] = []
    for row, reference, read_row in entries:
        try:
            rows.append(read_row())
        except InvalidInputError as problem:
            problems.append(RowProblem(row, reference, problem.message))
    return ParsedLabels(rows, problems)


def digest_named_by(reference: str) -> str | None:
    """The SHA-256 a reference names outright: a digest alone or as the last segment of a path or
    URL (``raw/ab/ab12…``, ``ab12….png``), so content-addressed keys need no lookup by name."""
    name = PurePosixPath(urlsplit(reference).path).name
    return next((c for c in (name, PurePosixPath(name).stem) if _SHA256.fullmatch(c)), None)


def defect_type_for(label: Label, defect_type: str | None) -> str | None:
    """The defect type to record with ``label``: free text for a bad image, none for a good one.

    Raises:
        InvalidInputError: a good image was given a defect type.
    """
    cleaned = (defect_type or "").strip()
    if cleaned and label is Label.GOOD:
        raise InvalidInputError(f"a good image has no defect type (got {cleaned!r})")
    return cleaned or None


class ImageIndex:
    """The images an import may label, found by any of the names an export gives them."""

    def __init__(self, images: Iterable[tuple[str, str]]) -> None:
        """Index ``(sha256, filename)`` pairs by digest, by full filename and by base name."""
        self._shas: set[str] = set()
        self._filenames: dict[str, set[str]] = defaultdict(set)
        self._basenames: dict[str, set[str]] = defaultdict(set)
        for sha256, filename in images:
            self._shas.add(sha256)
            self._filenames[filename].add(sha256)
            self._basenames[PurePosixPath(filename).name].add(sha256)

    def match(self, reference: str) -> str | None:
        """The SHA-256 of the image ``reference`` names, or None when it names none of them.

        Tried in order: a digest (alone or as the last segment of a path or URL), the filename
        the image was ingested with, its base name, and its base name behind Label Studio's
        upload prefix.

        Raises:
            InvalidInputError: the name fits several different images.
        """
        parts = urlsplit(reference)
        # Label Studio's local-files storage names the file in a query: /data/local-files/?d=...
        local = parse_qs(parts.query).get("d")
        path = unquote(local[0] if local else parts.path)
        digest = digest_named_by(path)
        if digest is not None:
            return digest if digest in self._shas else None
        name = PurePosixPath(path).name
        uploaded = _UPLOAD_PREFIX.fullmatch(name)
        for candidates in (
            self._filenames.get(reference),
            self._filenames.get(path.lstrip("/")),
            self._basenames.get(name),
            self._basenames.get(uploaded["name"]) if uploaded else None,
        ):
            if candidates:
                if len(candidates) > 1:
                    raise InvalidInputError(
                        f"{name!r} names {len(candidates)} different images; use the SHA-256"
                    )
                return next(iter(candidates))
        return None


# --- CSV -----------------------------------------------------------------------------------------


def _csv_entries(content: bytes) -> Iterator[Entry]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"the CSV is not UTF-8 text: {exc.reason}") from None
    reader = csv.reader(io.StringIO(text), strict=True)
    columns: dict[str, int] | None = None
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if columns is None:
                columns = _csv_header(cells)
                if columns is not None:
                    continue
                columns = {"reference": 0, "label": 1, "defect_type": 2}
            row = {name: _cell(cells, index) for name, index in columns.items()}
            yield reader.line_num, row["reference"], partial(_csv_row, reader.line_num, row)
    except csv.Error as exc:
        raise InvalidInputError(
            f"the CSV cannot be read at line {reader.line_num}: {exc}"
        ) from None


def _csv_header(first: list[str]) -> dict[str, int] | None:
    """The columns a header row names, or None when the first row is already data."""
    names = [cell.strip().lower() for cell in first]
    if "label" not in names:
        return None
    reference = next((names.index(c) for c in _REFERENCE_COLUMNS if c in names), None)
    if reference is None:
        raise InvalidInputError(
            f"the CSV header names no image column (one of {', '.join(_REFERENCE_COLUMNS)})"
        )
    columns = {"reference": reference, "label": names.index("label")}
    columns.update({c: names.index(c) for c in ("defect_type", "annotator") if c in names})
    return columns


def _cell(cells: list[str], index: int) -> str:
    return cells[index].strip() if index < len(cells) else ""


def _csv_row(row: int, cells: dict[str, str]) -> LabelRow:
    if not cells["reference"]:
        raise InvalidInputError("no filename or sha256")
    label = parse_label(cells["label"])
    return LabelRow(
        row=row,
        reference=cells["reference"],
        label=label,
        defect_type=defect_type_for(label, cells.get("defect_type")),
        annotator=cells.get("annotator") or None,
    )


# --- Label Studio --------------------------------------------------------------------------------


def _json_list(content: bytes) -> list[Any]:
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"the export is not JSON: {exc}") from None
    if not isinstance(document, list):
        raise InvalidInputError("a Label Studio export is a JSON list of tasks")
    return document


def _task_row(row: int, task: Any) -> LabelRow:
    """A task of the full export: ``data`` names the image, the last kept annotation labels it."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise InvalidInputError("a task is an object with 'data'")
    reference = _reference(task["data"])
    annotations = [
        a
        for a in task.get("annotations") or []
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    if not annotations:
        raise InvalidInputError("the task has no annotation")
    annotation = annotations[-1]
    choices = [
        choice
        for result in annotation.get("result") or []
        if isinstance(result, dict)
        for choice in _choices(result.get("value"))
    ]
    author = annotation.get("completed_by")
    annotator = author.get("email") if isinstance(author, dict) else None
    return LabelRow(row, reference, _one_label(choices), annotator=_text(annotator))


def _min_row(row: int, item: Any) -> LabelRow:
    """A JSON-MIN item: the task's data keys and each tag's value (``"choice": "good"``)."""
    if not isinstance(item, dict):
        raise InvalidInputError("a JSON-MIN item is an object")
    reference = _reference(item)
    key = next((k for k in _CHOICE_KEYS if k in item), None)
    if key is None:
        raise InvalidInputError(f"the item has no choice (one of {', '.join(_CHOICE_KEYS)})")
    return LabelRow(
        row, reference, _one_label(_choices(item[key])), annotator=_text(item.get("annotator"))
    )


def _reference(data: dict[str, Any]) -> str:
    for key in ("sha256", "image"):
        value = _text(data.get(key))
        if value:
            return value
    raise InvalidInputError("the task names no image ('image' or 'sha256')")


def _choices(value: Any) -> list[str]:
    """A Choices value in any of its shapes: ``"good"``, ``["good"]``, ``{"choices": [...]}``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, dict):
        return _choices(value.get("choices"))
    return []


def _one_label(choices: list[str]) -> Label:
    if len(choices) != 1:
        raise InvalidInputError(f"expected one choice (good or bad), found {choices}")
    return parse_label(choices[0])


# --- shared --------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _describe(item: Any) -> str:
    """What a JSON row named, as well as can be told from a row that may not be readable."""
    if not isinstance(item, dict):
        return ""
    if isinstance(item.get("data"), dict):
        return _describe(item["data"])
    try:
        return _reference(item)
    except InvalidInputError:
        return ""
