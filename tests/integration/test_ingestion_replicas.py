"""Two ingestion instances on the real MongoDB-wire server and MinIO (issue 18, finding 4):
each with its own clients, as two replicas are, ingesting one dataset at the same moment."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_contracts import Event
from screwops_contracts.datasets import Bucket, Manifest, manifest_key
from screwops_contracts.layouts import IncomingFile
from screwops_ingestion.config import Limits, Rules
from screwops_ingestion.service import IngestionService
from screwops_ingestion.store import Claim, ClaimState, MongoIngestionStore
from screwops_settings import StackSettings
from screwops_storage import ObjectStore, database

from tests.support import png, unique

ROUNDS = 20


async def _published(event: Event[Any]) -> None:
    """Announcements are not what this test is about; the outbox keeps them pending."""


def _replica(settings: StackSettings, db_name: str) -> tuple[IngestionService, Any]:
    """An instance with its own MongoDB and MinIO clients, as a second replica has."""
    db = database(settings.mongo, db_name, appname=unique("ingestion"))
    service = IngestionService(
        MongoIngestionStore(db),
        ObjectStore.from_settings(settings.minio),
        _published,
        rules=Rules(
            limits=Limits(max_bytes=200_000, max_pixels=2048 * 2048, concurrency=4),
            import_roots=(),
        ),
    )
    return service, db.client


async def test_two_instances_ingesting_one_dataset_make_distinct_complete_versions(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]
) -> None:
    objects = ObjectStore.from_settings(settings.minio)
    await objects.ensure_buckets(Bucket.IMAGES, Bucket.DATASETS)
    store = MongoIngestionStore(mongo_db)
    await store.ensure_indexes()
    (first, first_client), (second, second_client) = (
        _replica(settings, mongo_db.name),
        _replica(settings, mongo_db.name),
    )
    dataset = unique("replicas")
    try:
        versions: list[int | None] = []
        for round_ in range(ROUNDS):
            results = await asyncio.wait_for(
                asyncio.gather(
                    first.ingest(dataset, _image(2 * round_), source="upload"),
                    second.ingest(dataset, _image(2 * round_ + 1), source="upload"),
                ),
                timeout=30,
            )
            assert all(r.created for r in results), f"round {round_}: {results}"
            versions.extend(r.version for r in results)

        assert sorted(v for v in versions if v is not None) == list(range(1, 2 * ROUNDS + 1))
        held: set[str] = set()
        for version in range(1, 2 * ROUNDS + 1):
            record = await store.get_version(dataset, version)
            assert record is not None, f"v{version} is not complete"
            assert record.manifest_key == manifest_key(dataset, version)
            body = await objects.get_verified(
                Bucket.DATASETS, record.manifest_key, sha256=record.manifest_sha256
            )
            images = {i.sha256 for i in Manifest.model_validate_json(body).images}
            assert held < images, f"v{version} lost images of v{version - 1}"
            held = images
        assert len(held) == 2 * ROUNDS

        later = await first.ingest(dataset, _image(1000), source="upload")
        assert (later.version, later.created) == (2 * ROUNDS + 1, True)
    finally:
        first_client.close()
        second_client.close()


async def test_a_version_number_is_claimed_once_and_readers_see_only_complete_versions(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]
) -> None:
    """The unique index and the state filter on the local server (FerretDB v1 natively)."""
    db = database(settings.mongo, mongo_db.name)
    store = MongoIngestionStore(db)
    await store.ensure_indexes()
    dataset = unique("claims")
    claim = Claim(dataset, 1, "a", ClaimState.RESERVED, _now())

    assert await store.claim_version(claim)
    assert not await store.claim_version(Claim(dataset, 1, "b", ClaimState.RESERVED, _now()))
    assert await store.newest_claim(dataset) == claim
    assert await store.latest_version(dataset) is None
    assert await store.get_version(dataset, 1) is None
    assert await store.list_versions(offset=0, limit=100) == []
    assert await store.abandon_version(claim)
    assert not await store.abandon_version(claim)
    assert (await store.newest_claim(dataset)) == Claim(
        dataset, 1, "a", ClaimState.ABANDONED, claim.claimed_at
    )
    db.client.close()


def _image(seed: int) -> list[IncomingFile]:
    return [IncomingFile(f"{seed}.png", png(16, seed=seed))]


def _now() -> datetime:
    """Now, to the second: MongoDB keeps milliseconds."""
    return datetime.now(UTC).replace(microsecond=0)
