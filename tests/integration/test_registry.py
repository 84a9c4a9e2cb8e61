"""The registry on the real stack: approvals from Kafka become versions in FerretDB, exported to
the real Triton's repository, loaded, checked and announced; operators roll back and promote over
a real gRPC channel; a broken artifact changes nothing that serves.

The service's pieces run in-process, wired as ``__main__`` wires them, except that its bus uses
this test's own topics (:class:`RoutedBus`) and database, and the model name is unique, so
nothing here meets another test's events, documents or Triton models.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from pydantic import BaseModel
from screwops.v1 import registry_pb2, registry_pb2_grpc
from screwops_bus import Announcement
from screwops_contracts import (
    AssertionResult,
    ModelApproved,
    ModelApprovedPayload,
    ModelDeployed,
    ModelRolledBack,
    ModelRolledBackPayload,
    Topic,
)
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import PRODUCTION_ALIAS, saved_model_prefix
from screwops_registry import grpc_api, handlers
from screwops_registry.config import Deployment
from screwops_registry.placement import Placement, triton_prefix
from screwops_registry.service import RegistryService
from screwops_registry.store import (
    AliasMove,
    MongoRegistryStore,
    MoveKind,
    VersionRecord,
    VersionStatus,
)
from screwops_rpc import open_aio_channel
from screwops_serving import TritonModels, versions_present
from screwops_settings import StackSettings, triton_model_control_key, triton_model_repository
from screwops_storage import ObjectStore, database

from tests.frames_model import expected_scores, save_frames_model
from tests.integration.routing import RoutedBus, routed_topics, service_bus
from tests.integration.test_serving import FRAME_SIZE, SCALES, images
from tests.support import eventually, minio_client, remove_objects, unique

M = TypeVar("M", bound=BaseModel)


@dataclass
class Registry:
    """The running service, a client for its API, Triton, and what the service published."""

    model: str
    bus: RoutedBus
    objects: ObjectStore
    triton: TritonModels
    stub: registry_pb2_grpc.RegistryServiceAsyncStub
    repository: Path
    scratch: Path
    # The scale of the frames model each registered version answers with.
    scales: dict[int, float] = field(default_factory=dict)
    deployed: list[ModelDeployed] = field(default_factory=list)
    rolled_back: list[ModelRolledBack] = field(default_factory=list)

    async def approve(
        self, run_id: str, saved_model: Path, *, threshold: float = 0.5
    ) -> ModelApproved:
        """Put a run's SavedModel in MinIO and publish the evaluator's approval of it at the
        threshold the run chose."""
        prefix = saved_model_prefix(run_id)
        await self.objects.put_directory(Bucket.MODELS, saved_model, prefix=prefix)
        approval = ModelApproved.origin(
            ModelApprovedPayload(
                model_name=self.model,
                run_id=run_id,
                evaluation_id=f"eval-{run_id}",
                dataset_id="it-screws",
                dataset_version=1,
                artifact_key=prefix,
                metrics={"accuracy": 0.97},
                checks=[AssertionResult(name="accuracy", passed=True, observed=0.97)],
                champion_version=None,
                report_key=f"evaluations/eval-{run_id}.json",
                threshold=threshold,
                frame_size=FRAME_SIZE,
            ),
            producer="evaluator",
        )
        await self.bus.publish(approval)
        return approval

    async def approve_model(
        self, run_id: str, *, seed: int, threshold: float = 0.5
    ) -> ModelApproved:
        """Approve a run whose SavedModel is the frames model at ``SCALES[seed]``."""
        directory = self.scratch / run_id
        save_frames_model(directory, FRAME_SIZE, scale=SCALES[seed])
        approval = await self.approve(run_id, directory, threshold=threshold)
        self.scales[len(self.scales) + 1] = SCALES[seed]
        return approval

    async def deployment_of(self, version: int) -> ModelDeployed:
        async def found() -> ModelDeployed | None:
            return next((e for e in self.deployed if e.payload.version == version), None)

        return await eventually(found, within=120, what=f"model.deployed for version {version}")

    async def lineage(self, version: int) -> registry_pb2.ModelVersion:
        return await self.stub.GetLineage(
            registry_pb2.GetLineageRequest(model_name=self.model, version=version)
        )

    async def production(self) -> int:
        listed = await self.stub.ListVersions(
            registry_pb2.ListVersionsRequest(model_name=self.model)
        )
        [version] = [v.version for v in listed.model_versions if PRODUCTION_ALIAS in v.aliases]
        return version

    async def answers_like(self, version: int, model_version: int) -> bool:
        batch = images(3, seed=version)
        answered = await self.triton.infer(self.model, version, batch, timeout_s=30)
        probability, _ = expected_scores(batch, scale=self.scales[model_version])
        return bool(np.allclose(answered.probability, probability, atol=1e-4))


@pytest.fixture
async def routes(settings: StackSettings) -> AsyncIterator[dict[str, str]]:
    """A fresh topic (and dead-letter twin) for each topic the registry consumes or produces."""
    used = (
        Topic.MODEL_APPROVED,
        Topic.MODEL_REJECTED,
        Topic.MODEL_DEPLOYED,
        Topic.MODEL_ROLLED_BACK,
    )
    async for routes in routed_topics(settings, used, "it-registry"):
        yield routes


@pytest.fixture
async def registry(
    settings: StackSettings,
    mongo_db: AsyncIOMotorDatabase[Any],
    routes: dict[str, str],
    tmp_path: Path,
) -> AsyncIterator[Registry]:
    model = unique("it-registry-model")
    db = database(settings.mongo, mongo_db.name, appname="it-registry")
    objects = ObjectStore.from_settings(settings.minio)
    await objects.ensure_buckets(Bucket.MODELS)
    bus = service_bus(settings, "registry", db, routes)
    store = MongoRegistryStore(db)
    await store.ensure_indexes()
    repository = triton_model_repository(settings.home)
    triton = TritonModels(
        settings.triton.grpc_url, model_control_key=triton_model_control_key(settings)
    )
    service = RegistryService(
        store,
        Placement(objects, triton, Deployment(repository=repository, keep_versions=3)),
        bus.publish,
        producer="registry",
    )
    handlers.register(bus, service)
    server = grpc_api.server(
        service,
        host="127.0.0.1",
        port=0,
    )
    deployed: list[ModelDeployed] = []
    rolled_back: list[ModelRolledBack] = []

    @bus.broker.subscriber(routes[Topic.MODEL_DEPLOYED], group_id=unique("it-reader"))
    async def on_model_deployed(event: ModelDeployed) -> None:
        deployed.append(event)

    @bus.broker.subscriber(routes[Topic.MODEL_ROLLED_BACK], group_id=unique("it-reader"))
    async def on_model_rolled_back(event: ModelRolledBack) -> None:
        rolled_back.append(event)

    await bus.broker.start()
    await server.start()
    channel = open_aio_channel(f"127.0.0.1:{server.port}")
    try:
        yield Registry(
            model=model,
            bus=bus,
            objects=objects,
            triton=triton,
            stub=registry_pb2_grpc.RegistryServiceStub(channel),
            repository=repository,
            scratch=tmp_path,
            deployed=deployed,
            rolled_back=rolled_back,
        )
    finally:
        await channel.close()
        await server.stop(grace=1)
        await bus.broker.stop()
        if await triton.ready(model):
            await triton.unload(model)
        await triton.close()
        shutil.rmtree(repository / model, ignore_errors=True)
        runs = [saved_model_prefix(f"{model}-run-{n}") for n in range(1, 4)]
        prefixes = [f"{prefix}/" for prefix in (f"triton/{model}", *runs)]
        s3 = minio_client(settings.minio)
        await asyncio.to_thread(remove_objects, s3, Bucket.MODELS, *prefixes)
        db.client.close()


async def test_approvals_are_served_rolled_back_and_promoted(registry: Registry) -> None:
    model = registry.model

    first = await registry.approve_model(f"{model}-run-1", seed=1, threshold=0.35)
    deployed = await registry.deployment_of(1)
    assert deployed.causation_id == first.event_id
    assert (deployed.payload.previous_version, deployed.payload.triton_model) == (None, model)
    lineage = await registry.lineage(1)
    assert lineage.stage == registry_pb2.MODEL_STAGE_PRODUCTION
    assert (lineage.run_id, lineage.evaluation_id) == (f"{model}-run-1", f"eval-{model}-run-1")
    assert (lineage.dataset_id, lineage.dataset_version) == ("it-screws", 1)
    assert lineage.threshold == pytest.approx(0.35)  # float32 on the wire
    assert lineage.model_kind == registry_pb2.MODEL_KIND_SUPERVISED
    assert deployed.payload.threshold == 0.35
    assert await registry.triton.ready(model, 1)
    assert await registry.answers_like(1, model_version=1)
    kept = await registry.objects.list_keys(Bucket.MODELS, triton_prefix(model, 1))
    assert f"{triton_prefix(model, 1)}/model.py" in kept

    await registry.approve_model(f"{model}-run-2", seed=2, threshold=0.6)
    deployed = await registry.deployment_of(2)
    assert deployed.payload.previous_version == 1
    assert await registry.production() == 2
    assert await registry.triton.loaded_versions(model) == [1, 2]
    assert await registry.answers_like(2, model_version=2)

    started = time.perf_counter()
    change = await registry.stub.Rollback(
        registry_pb2.RollbackRequest(
            request_id=unique("rollback"),
            model_name=model,
            actor="it@plant-7",
            reason="false rejects",
        )
    )

    async def rolled_back() -> ModelRolledBack | None:
        return next(iter(registry.rolled_back), None)

    event = await eventually(rolled_back, within=10, what="model.rolled_back")
    assert await registry.answers_like(event.payload.to_version, model_version=1)
    took = time.perf_counter() - started
    print(f"rollback: alias moved, event consumed and version 1 answering in {took:.3f} s")
    assert took < 10
    assert (change.from_version, change.to_version) == (2, 1)
    assert (change.actor, change.reason) == ("it@plant-7", "false rejects")
    assert event.payload.model_dump() == {
        "model_name": model,
        "from_version": 2,
        "to_version": 1,
        "triton_model": model,
        "actor": "it@plant-7",
        "reason": "false rejects",
        "threshold": 0.35,
        "model_kind": "supervised",
        "frame_size": FRAME_SIZE,
        "sequence": 3,  # approvals of v1 and v2 were moves 1 and 2
    }
    assert await registry.production() == 1
    assert (await registry.lineage(2)).stage == registry_pb2.MODEL_STAGE_ARCHIVED

    announced = len(registry.deployed)
    change = await registry.stub.Promote(
        registry_pb2.PromoteRequest(
            request_id=unique("promote"), model_name=model, version=2, actor="it", reason="fixed"
        )
    )
    assert (change.from_version, change.to_version) == (1, 2)

    async def promotion() -> ModelDeployed | None:
        return registry.deployed[announced] if len(registry.deployed) > announced else None

    promoted = await eventually(promotion, within=10, what="model.deployed for the promotion")
    assert promoted.payload.version == 2
    assert promoted.payload.previous_version == 1
    assert promoted.causation_id is None
    assert await registry.production() == 2

    broken = registry.scratch / "broken"
    (broken / "variables").mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"\x00garbage, not a SavedModel\xff" * 32)
    (broken / "variables" / "variables.index").write_bytes(b"garbage")
    await registry.approve(f"{model}-run-3", broken)

    async def failed() -> registry_pb2.ModelVersion | None:
        try:
            version = await registry.lineage(3)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        done = version.stage == registry_pb2.MODEL_STAGE_FAILED
        return (
            version if done and 3 not in versions_present(registry.repository, name=model) else None
        )

    version3 = await eventually(failed, within=120, what="version 3 to fail")
    assert "saved_model.pb" in version3.failure_reason
    assert await registry.production() == 2
    assert await registry.triton.loaded_versions(model) == [1, 2]
    assert await registry.answers_like(2, model_version=2)
    assert not [e for e in registry.deployed if e.payload.version == 3]
    assert not await registry.objects.list_keys(Bucket.MODELS, triton_prefix(model, 3))


async def test_the_mongo_store_keeps_numbers_and_the_alias_safe(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]
) -> None:
    """The unique indexes and the alias's compare-and-set, on FerretDB (or MongoDB)."""
    db = database(settings.mongo, mongo_db.name, appname="it-registry")
    store = MongoRegistryStore(db)
    try:
        await store.ensure_indexes()
        await store.ensure_indexes()
        record = _record("m", 1, "run-a")

        assert await store.create_version(record)
        assert not await store.create_version(_record("m", 1, "run-b")), "number taken"
        assert not await store.create_version(_record("m", 2, "run-a")), "run registered"
        assert await store.create_version(_record("m", 2, "run-b"))
        assert await store.latest_version("m") == 2
        assert await store.version_for_run("m", "run-a") == record
        assert [r.version for r in await store.list_versions("m", offset=0, limit=5)] == [2, 1]
        await store.set_status("m", 2, VersionStatus.FAILED, reason="broken")
        failed = await store.get_version("m", 2)
        assert failed is not None
        assert (failed.status, failed.failure_reason) == (VersionStatus.FAILED, "broken")

        first, deployed = _move(None, 1, MoveKind.DEPLOY, sequence=1)
        assert await store.move_alias(
            "m", "production", expected=None, move=first, announcements=[deployed]
        )
        assert not await store.move_alias(
            "m", "production", expected=None, move=first, announcements=[deployed]
        )
        moved = await store.get_alias("m", "production")
        assert moved is not None
        second, promoted = _move(1, 2, MoveKind.PROMOTE, sequence=2)
        stale = replace(moved, sequence=7)
        assert not await store.move_alias(
            "m", "production", expected=stale, move=second, announcements=[promoted]
        )
        assert await store.move_alias(
            "m", "production", expected=moved, move=second, announcements=[promoted]
        )
        alias = await store.get_alias("m", "production")
        assert alias is not None
        assert (alias.version, alias.sequence) == (2, 2)
        assert alias.history == (first, second)
        assert alias.made_by("req-2") == second
        assert alias.pending == (deployed, promoted), "both queued by their moves"
        await store.announced("m", "production", deployed.id)
        alias = await store.get_alias("m", "production")
        assert alias is not None
        assert alias.pending == (promoted,)
        assert [a.model_name for a in await store.aliases("production")] == ["m"]

        named, first_note = _move(None, 1, MoveKind.SET, sequence=1)
        assert await store.move_alias(
            "m", "candidate", expected=None, move=named, announcements=[first_note]
        )
        current = await store.get_alias("m", "candidate")
        assert current is not None
        cleared = replace(named, to_version=None, kind=MoveKind.REFUSE, sequence=2)
        _, second_note = _move(1, 1, MoveKind.REFUSE, sequence=2)
        _, third_note = _move(1, 1, MoveKind.REFUSE, sequence=3)
        assert await store.move_alias(
            "m",
            "candidate",
            expected=current,
            move=cleared,
            announcements=[second_note, third_note],
        )
        unset = await store.get_alias("m", "candidate")
        assert unset is not None
        assert (unset.version, unset.history) == (None, (named, cleared))
        assert unset.pending == (first_note, second_note, third_note), "queued in order"
        assert [a.name for a in await store.model_aliases("m")] == ["candidate", "production"]
    finally:
        db.client.close()


def _now() -> datetime:
    """Now at the millisecond precision MongoDB keeps, so what is read back compares equal."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _record(model: str, version: int, run_id: str) -> VersionRecord:
    return VersionRecord(
        model_name=model,
        version=version,
        run_id=run_id,
        evaluation_id=f"eval-{run_id}",
        dataset_id="screws",
        dataset_version=1,
        artifact_key=saved_model_prefix(run_id),
        metrics={"accuracy": 0.9},
        checks=[AssertionResult(name="accuracy", passed=True, observed=0.9)],
        champion_version=None,
        report_key="r.json",
        correlation_id="c",
        approved_by="evaluator",
        created_at=_now(),
    )


def _move(
    source: int | None, target: int, kind: MoveKind, *, sequence: int
) -> tuple[AliasMove, Announcement]:
    """A move and an announcement of it, as the service would queue it."""
    move = AliasMove(
        source,
        target,
        kind,
        actor="it",
        reason="r",
        at=_now(),
        cause=None,
        sequence=sequence,
        request_id=f"req-{sequence}",
    )
    event = ModelRolledBack.origin(
        ModelRolledBackPayload(
            model_name="m",
            from_version=source or target,
            to_version=target,
            triton_model="m",
            actor="it",
            reason="r",
            sequence=sequence,
        ),
        producer="it",
    )
    return move, Announcement(event)
