"""Two ingestion replicas on one database and one object store (issue 18, finding 4): a version
number is claimed before its manifest is written, so racing ingests of one dataset never write
the same manifest key, and a claim whose claimant died does not block the dataset forever."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from screwops_contracts.datasets import Bucket, Manifest, manifest_key
from screwops_contracts.layouts import IncomingFile
from screwops_errors import AlreadyExistsError, NotFoundError, UnavailableError
from screwops_ingestion.config import Limits, Rules
from screwops_ingestion.service import IngestionService
from screwops_ingestion.store import Claim, ClaimState, IngestionStore, Objects
from screwops_storage import StoredObject

from tests.fakes import FakeObjects, RecordingBus
from tests.support import eventually, png
from tests.unit.ingestion.fakes import FakeStore

ROUNDS = 20


class Remote:
    """A replica's view of shared state: each call is a round trip, so the other replica runs
    before it is sent and before its answer is read, as over a network."""

    def __init__(self, target: object) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            try:
                return await attribute(*args, **kwargs)
            finally:
                await asyncio.sleep(0)

        return call


class WatchedObjects(FakeObjects):
    """Remembers every distinct content written under each key: two means one was overwritten."""

    def __init__(self) -> None:
        super().__init__()
        self.written: dict[tuple[str, str], set[str]] = {}
        self.failing: Callable[[str], bool] = lambda key: False
        self.gate: asyncio.Event | None = None
        """While given and unset, manifests wait to be written (a slow MinIO)."""

    async def put_named(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ""
    ) -> StoredObject:
        if self.gate is not None and key.endswith("/manifest.json"):
            await self.gate.wait()
        if self.failing(key):
            raise UnavailableError("MinIO did not answer")
        self.written.setdefault((bucket, key), set()).add(hashlib.sha256(data).hexdigest())
        return await super().put_named(bucket, key, data, content_type=content_type)

    def overwritten(self) -> list[tuple[str, str]]:
        return sorted(key for key, contents in self.written.items() if len(contents) > 1)


def replica(store: FakeStore, objects: FakeObjects, *, claim_timeout_s: float = 120) -> Any:
    return IngestionService(
        cast(IngestionStore, Remote(store)),
        cast(Objects, Remote(objects)),
        RecordingBus("ingestion").publish,
        rules=Rules(
            limits=Limits(max_bytes=50_000, max_pixels=512 * 512, concurrency=4),
            import_roots=("/",),
            claim_timeout_s=claim_timeout_s,
        ),
    )


def image(seed: int) -> list[IncomingFile]:
    return [IncomingFile(f"{seed}.png", png(16, seed=seed))]


async def manifest(objects: FakeObjects, store: FakeStore, version: int) -> Manifest:
    """The version's manifest, read as every later ingest reads it: checked against its digest."""
    record = store.versions[f"screws@v{version}"]
    body = await objects.get_verified(
        Bucket.DATASETS, record.manifest_key, sha256=record.manifest_sha256
    )
    return Manifest.model_validate_json(body)


async def test_two_replicas_ingesting_one_dataset_make_distinct_complete_versions() -> None:
    store, objects = FakeStore(), WatchedObjects()
    first, second = replica(store, objects), replica(store, objects)

    versions: list[int | None] = []
    for round_ in range(ROUNDS):
        results = await asyncio.gather(
            first.ingest("screws", image(2 * round_), source="upload"),
            second.ingest("screws", image(2 * round_ + 1), source="upload"),
        )
        assert all(r.created for r in results)
        versions.extend(r.version for r in results)

    assert sorted(v for v in versions if v is not None) == list(range(1, 2 * ROUNDS + 1))
    assert objects.overwritten() == []
    shas: set[str] = set()
    for version in range(1, 2 * ROUNDS + 1):
        held = {i.sha256 for i in (await manifest(objects, store, version)).images}
        assert shas < held, f"v{version} lost images of v{version - 1}"
        shas = held
    assert len(shas) == 2 * ROUNDS

    later = await first.ingest("screws", image(1000), source="upload")
    assert (later.version, later.created) == (2 * ROUNDS + 1, True)
    assert len((await manifest(objects, store, 2 * ROUNDS + 1)).images) == 2 * ROUNDS + 1


async def test_a_claim_its_claimant_never_completed_is_abandoned_once_stale() -> None:
    store, objects = FakeStore(), WatchedObjects()
    service = replica(store, objects, claim_timeout_s=60)
    await service.ingest("screws", image(1), source="upload")
    dead = Claim(
        "screws", 2, "crashed", ClaimState.RESERVED, datetime.now(UTC) - timedelta(hours=1)
    )
    assert await store.claim_version(dead)

    result = await service.ingest("screws", image(2), source="upload")

    assert result.version == 3
    assert store.claims["screws@v2"].state is ClaimState.ABANDONED
    with pytest.raises(NotFoundError):
        await service.get_version("screws", 2)
    assert len((await manifest(objects, store, 3)).images) == 2


async def _claimed(store: FakeStore, version_id: str) -> bool | None:
    return version_id in store.claims or None


async def test_a_claim_in_progress_is_waited_for_and_the_next_version_builds_on_it() -> None:
    store, objects = FakeStore(), WatchedObjects()
    first, second = replica(store, objects), replica(store, objects)
    objects.gate = asyncio.Event()
    slow = asyncio.create_task(first.ingest("screws", image(1), source="upload"))
    await eventually(lambda: _claimed(store, "screws@v1"), within=2, what="the claim of v1")
    waiting = asyncio.create_task(second.ingest("screws", image(2), source="upload"))
    await asyncio.sleep(0.2)
    assert not waiting.done(), "cut a version while the one before it was still claimed"

    objects.gate.set()

    assert ((await slow).version, (await waiting).version) == (1, 2)
    assert len((await manifest(objects, store, 2)).images) == 2


async def test_a_manifest_that_could_not_be_written_gives_its_number_up_at_once() -> None:
    store, objects = FakeStore(), WatchedObjects()
    service = replica(store, objects)
    objects.failing = lambda key: key == manifest_key("screws", 1)

    with pytest.raises(UnavailableError):
        await service.ingest("screws", image(1), source="upload")
    objects.failing = lambda key: False
    result = await asyncio.wait_for(service.ingest("screws", image(1), source="upload"), 1)

    assert store.claims["screws@v1"].state is ClaimState.ABANDONED
    assert result.version == 2


async def test_a_manifest_key_holding_other_bytes_is_never_overwritten() -> None:
    store, objects = FakeStore(), WatchedObjects()
    key = manifest_key("screws", 1)
    objects.objects[(Bucket.DATASETS, key)] = b"left by an earlier writer"

    with pytest.raises(AlreadyExistsError):
        await replica(store, objects).ingest("screws", image(1), source="upload")

    assert objects.objects[(Bucket.DATASETS, key)] == b"left by an earlier writer"
    assert store.claims["screws@v1"].state is ClaimState.ABANDONED
