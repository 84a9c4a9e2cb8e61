"""``screwops ingest``'s upload: a local folder or zip into a dataset through ingestion's Upload.

The tree is read with the layout parser server-side imports use (:mod:`screwops_contracts.layouts`),
so every image reaches the dataset with the label, defect type and origin split an import of the
same tree would record. Files are read and hashed by a bounded pool of threads; the dataset is
asked which hashes it holds already (FindImages) and only the others are sent, so a re-run sends
nothing it sent before. They go in one Upload stream, read ahead by the same bounded pool, which
the service checks and stores a few at once: one stream is one dataset version, one
``dataset.ingested`` and one pipeline run, where parallel streams would each cut their own.

What the server never sees is still reported as an import reports it: files the layout refuses
(links, CSV rows that cannot be honoured, files too large for a message) as refused with their
reason, and files the dataset holds as duplicates, so the counts match a server-side import's.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from screwops.v1 import ingestion_pb2, ingestion_pb2_grpc
from screwops_contracts.layouts import LabelMap, Layout, Planned, Source, load, plan

from screwops_cli.labels import LABELS, LabelWord

MAX_FILE_BYTES = 32 * 1024 * 1024
"""The largest file sent: what ingestion receives in one message by default (4 times its default
image limit); a larger one would fail the whole stream, so it is refused here instead."""

FIND_BATCH = 4096
"""SHA-256s per FindImages request: the most ingestion answers at once (ingestion.proto)."""

UPLOAD_TIMEOUT_S = 3600.0
ALREADY_HELD = "already in the dataset"

SPLITS = {"train": ingestion_pb2.ORIGIN_SPLIT_TRAIN, "test": ingestion_pb2.ORIGIN_SPLIT_TEST}

Advance = Callable[[int], None]


@dataclass(frozen=True)
class Hashed:
    """One planned file, with the SHA-256 and size of its bytes, or why it is refused unsent."""

    entry: Planned
    sha256: str = ""
    size: int = 0
    problem: str | None = None


@dataclass(frozen=True)
class Uploaded:
    """What an upload did: the merged result an import would have given, and what was sent."""

    result: ingestion_pb2.ImportResult
    sent: int
    held: int


@contextmanager
def walk(path: Path, layout: Layout, label_map: LabelMap) -> Iterator[tuple[Source, list[Planned]]]:
    """The folder or zip at ``path`` and every file in it with its place, as a server-side
    import plans them; the source stays open (a zip) while the block reads it.

    Raises:
        InvalidInputError: the path is neither a folder nor a zip, or as
            :func:`screwops_contracts.layouts.plan` (nothing is sent).
    """
    source = Source(path.resolve())
    try:
        yield source, plan(source, layout=layout, label_map=label_map)
    finally:
        source.close()


def hash_all(
    source: Source, planned: list[Planned], *, workers: int, advance: Advance
) -> list[Hashed]:
    """Each planned file read and hashed, ``workers`` at a time, in the planned order; only the
    hashes are kept, so memory holds at most ``workers`` files."""

    def one(entry: Planned) -> Hashed:
        file = load(source, entry, MAX_FILE_BYTES)
        advance(1)
        if file.problem is not None:
            return Hashed(entry, problem=file.problem)
        return Hashed(entry, hashlib.sha256(file.data).hexdigest(), len(file.data))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, planned))


def find_present(
    stub: ingestion_pb2_grpc.IngestionServiceStub, dataset: str, shas: list[str]
) -> set[str]:
    """Which of ``shas`` the dataset's newest version holds, asked a batch at a time."""
    unique = list(dict.fromkeys(shas))
    present: set[str] = set()
    for start in range(0, len(unique), FIND_BATCH):
        request = ingestion_pb2.FindImagesRequest(
            dataset_id=dataset, sha256=unique[start : start + FIND_BATCH]
        )
        present.update(stub.FindImages(request, timeout=60).present)
    return present


def requests(
    source: Source, dataset: str, files: list[Hashed], *, workers: int, advance: Advance
) -> Iterator[ingestion_pb2.UploadRequest]:
    """The Upload stream: the header, then each file, read ``workers`` ahead of the one sent."""
    yield ingestion_pb2.UploadRequest(header=ingestion_pb2.UploadHeader(dataset_id=dataset))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ahead: deque[tuple[Hashed, Future[bytes]]] = deque()
        pending = iter(files)
        for file in pending:
            ahead.append((file, pool.submit(source.read, file.entry.name)))
            if len(ahead) >= workers:
                break
        while ahead:
            file, content = ahead.popleft()
            following = next(pending, None)
            if following is not None:
                ahead.append((following, pool.submit(source.read, following.entry.name)))
            data = content.result()
            yield ingestion_pb2.UploadRequest(file=_file(file.entry, data))
            advance(len(data))


def upload(
    stub: ingestion_pb2_grpc.IngestionServiceStub,
    source: Source,
    planned: list[Planned],
    dataset: str,
    *,
    workers: int,
    progress: Callable[[str, int], Advance],
) -> Uploaded:
    """Hash ``planned``, send what the dataset lacks, and merge what the server answered with
    what it was spared. ``progress(description, total)`` makes a task and returns its advance."""
    hashed = hash_all(source, planned, workers=workers, advance=progress("hashing", len(planned)))
    readable = [h for h in hashed if h.problem is None]
    present = find_present(stub, dataset, [h.sha256 for h in readable])
    to_send = [h for h in readable if h.sha256 not in present]
    stream = requests(
        source,
        dataset,
        to_send,
        workers=workers,
        advance=progress("uploading", sum(h.size for h in to_send)),
    )
    answer = stub.Upload(stream, timeout=UPLOAD_TIMEOUT_S)
    answer.files.extend(_spared(h) for h in hashed if h.problem is not None or h.sha256 in present)
    answer.refused_count += len(hashed) - len(readable)
    answer.duplicate_count += len(readable) - len(to_send)
    return Uploaded(answer, sent=len(to_send), held=len(readable) - len(to_send))


def _spared(file: Hashed) -> ingestion_pb2.FileOutcome:
    """The outcome a server-side import would report for a file this upload did not send."""
    return ingestion_pb2.FileOutcome(
        filename=file.entry.name,
        sha256=file.sha256,
        status=ingestion_pb2.FILE_STATUS_REFUSED
        if file.problem is not None
        else ingestion_pb2.FILE_STATUS_DUPLICATE,
        reason=file.problem or ALREADY_HELD,
    )


def _file(entry: Planned, data: bytes) -> ingestion_pb2.UploadFile:
    place = entry.place
    file = ingestion_pb2.UploadFile(
        filename=entry.name, content=data, defect_type=place.defect_type or ""
    )
    if place.label is not None:
        file.label = LABELS[LabelWord(place.label)]
    if place.origin_split is not None:
        file.origin_split = SPLITS[place.origin_split]
    return file
