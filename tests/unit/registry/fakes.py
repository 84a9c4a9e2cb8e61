"""In-memory stand-ins for the registry's store and Triton (unit tests only).

The fake Triton (:class:`tests.fakes.RepositoryTriton`) reads the real model repository on disk
(the tests export into ``tmp_path`` with ``screwops_serving``), so eviction and restores are
checked on real directories; the object store and the bus are the shared
:class:`tests.fakes.FakeObjects` and :class:`tests.fakes.RecordingBus`.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from uuid import uuid4

import numpy as np
from screwops_bus import Announcement, Bus, Pending
from screwops_contracts import (
    AssertionResult,
    ModelApproved,
    ModelApprovedPayload,
    ModelRejected,
    ModelRejectedPayload,
)
from screwops_contracts.models import ModelKind
from screwops_errors import FailedPreconditionError, NotFoundError
from screwops_registry.config import (
    DEFAULT_ALIAS_LIMIT,
    DEFAULT_HISTORY_LIMIT,
    Deployment,
    ReleasePolicies,
    RolloutPolicies,
)
from screwops_registry.placement import Placement
from screwops_registry.service import RegistryService
from screwops_registry.store import (
    ALIASES,
    Alias,
    AliasMove,
    Rejection,
    Rollout,
    VersionRecord,
    VersionStatus,
    alias_id,
)
from screwops_serving import CONFIG_FILE, Scores, versions_present

from tests.fakes import FakeObjects, RecordingBus, RepositoryTriton
from tests.support import FRAME_SIZE


class FakeStore:
    """:class:`RegistryStore` in memory, with the unique keys the Mongo indexes enforce, and the
    outbox its aliases keep (:class:`screwops_bus.Outbox`)."""

    def __init__(self, *, history_limit: int = DEFAULT_HISTORY_LIMIT) -> None:
        self.history_limit = history_limit
        self.versions: dict[str, VersionRecord] = {}
        self.alias_docs: dict[str, Alias] = {}
        self.rejections: dict[str, Rejection] = {}
        self.rollout_writes = 0
        """Updates that changed a rollout: each one its state, its announcements and, for a
        completion, production's move."""

    async def ensure_indexes(self) -> None:
        return None

    async def create_version(self, record: VersionRecord) -> bool:
        taken = any(
            v.model_name == record.model_name
            and (v.version == record.version or v.run_id == record.run_id)
            for v in self.versions.values()
        )
        if taken:
            return False
        self.versions[record.id] = record
        return True

    async def version_for_run(self, model_name: str, run_id: str) -> VersionRecord | None:
        return next(
            (
                v
                for v in self.versions.values()
                if v.model_name == model_name and v.run_id == run_id
            ),
            None,
        )

    async def latest_version(self, model_name: str) -> int:
        return max(
            (v.version for v in self.versions.values() if v.model_name == model_name), default=0
        )

    async def get_version(self, model_name: str, version: int) -> VersionRecord | None:
        return self.versions.get(f"{model_name}@v{version}")

    async def list_versions(
        self, model_name: str, *, offset: int, limit: int
    ) -> list[VersionRecord]:
        mine = sorted(
            (v for v in self.versions.values() if v.model_name == model_name),
            key=lambda v: -v.version,
        )
        return mine[offset : offset + limit]

    async def set_status(
        self, model_name: str, version: int, status: VersionStatus, *, reason: str = ""
    ) -> None:
        key = f"{model_name}@v{version}"
        if key not in self.versions:
            raise NotFoundError(key)
        self.versions[key] = replace(self.versions[key], status=status, failure_reason=reason)

    async def get_alias(self, model_name: str, alias: str) -> Alias | None:
        return self.alias_docs.get(f"{model_name}:{alias}")

    async def aliases(self, alias: str) -> list[Alias]:
        return sorted(
            (a for a in self.alias_docs.values() if a.name == alias), key=lambda a: a.model_name
        )

    async def model_aliases(self, model_name: str) -> list[Alias]:
        return sorted(
            (a for a in self.alias_docs.values() if a.model_name == model_name),
            key=lambda a: a.name,
        )

    async def move_alias(
        self,
        model_name: str,
        alias: str,
        *,
        expected: Alias | None,
        move: AliasMove,
        announcements: Sequence[Announcement],
    ) -> bool:
        key = alias_id(model_name, alias)
        current = self.alias_docs.get(key)

        def state(a: Alias | None) -> tuple[int | None, int] | None:
            return (a.version, a.sequence) if a else None

        if state(current) != state(expected):
            return False
        pending = current.pending if current else ()
        self.alias_docs[key] = Alias(
            model_name,
            alias,
            move.to_version,
            current.history_after(move, self.history_limit) if current else (move,),
            move.sequence,
            (*pending, *announcements),
            current.rollout if current else None,
        )
        return True

    async def change_rollout(
        self,
        model_name: str,
        *,
        expected: Alias,
        rollout: Rollout,
        announcements: Sequence[Announcement],
        move: AliasMove | None = None,
    ) -> bool:
        key = alias_id(model_name, "production")
        current = self.alias_docs.get(key)
        if current is None or (current.version, current.sequence) != (
            expected.version,
            expected.sequence,
        ):
            return False
        self.rollout_writes += 1
        self.alias_docs[key] = replace(
            current,
            version=move.to_version if move else current.version,
            history=current.history_after(move, self.history_limit) if move else current.history,
            sequence=rollout.sequence,
            pending=(*current.pending, *announcements),
            rollout=replace(rollout, changes=rollout.changes[-self.history_limit :]),
        )
        return True

    async def queue_announcement(
        self, model_name: str, alias: str, *, version: int | None, announcement: Announcement
    ) -> bool:
        key = alias_id(model_name, alias)
        current = self.alias_docs.get(key)
        if current is None or current.version != version:
            return False
        self.alias_docs[key] = replace(current, pending=(*current.pending, announcement))
        return True

    async def announced(self, model_name: str, alias: str, announcement_id: str) -> None:
        key = alias_id(model_name, alias)
        current = self.alias_docs[key]
        pending = tuple(a for a in current.pending if a.id != announcement_id)
        self.alias_docs[key] = replace(current, pending=pending)

    async def pending(self) -> list[Pending]:
        return [
            Pending(ALIASES, key, a)
            for key, alias in self.alias_docs.items()
            for a in alias.pending
        ]

    async def sent(self, pending: Pending) -> None:
        alias = self.alias_docs[pending.document_id]
        await self.announced(alias.model_name, alias.name, pending.announcement.id)

    async def record_rejection(self, rejection: Rejection) -> None:
        self.rejections.setdefault(rejection.id, rejection)


class FakeTriton(RepositoryTriton):
    """The shared repository Triton; a served version's check answers 0.5, no part found (the
    blank frame holds none), for frames of the size its config takes."""

    async def check(self, name: str, version: int, *, frame_size: int, timeout_s: float) -> Scores:
        self._answer()
        if not await self.ready(name, version):
            raise FailedPreconditionError(f"{name} version {version} is not ready in Triton")
        if f"dims: [ {frame_size}, {frame_size}, 1 ]" not in self.config(name):
            raise FailedPreconditionError(f"{name} takes frames of another size")
        return Scores(probability=np.array([0.5], np.float32), found=np.zeros(1, np.float32))

    def config(self, name: str) -> str:
        return (self.repository / name / CONFIG_FILE).read_text()


@dataclass
class Harness:
    """A registry service on fakes, and helpers to feed it approvals."""

    service: RegistryService
    store: FakeStore
    objects: FakeObjects
    triton: FakeTriton
    sent: RecordingBus
    repository: Path
    model: str = "screws"

    def approval(
        self,
        run_id: str,
        *,
        graph: bytes = b"graph",
        threshold: float = 0.4,
        kind: ModelKind = ModelKind.SUPERVISED,
        frame_size: int = FRAME_SIZE,
    ) -> ModelApproved:
        """The evaluator's approval of a run whose SavedModel is in the models bucket, at the
        threshold the run chose."""
        artifact = self.objects.put_saved_model(f"runs/{run_id}/saved_model", graph)
        return ModelApproved.origin(
            ModelApprovedPayload(
                model_name=self.model,
                run_id=run_id,
                evaluation_id=f"eval-{run_id}",
                dataset_id="screws",
                dataset_version=3,
                artifact_key=artifact,
                metrics={"accuracy": 0.98, "threshold": threshold},
                checks=[AssertionResult(name="accuracy", passed=True, observed=0.98)],
                champion_version=None,
                report_key=f"evaluations/eval-{run_id}.json",
                threshold=threshold,
                model_kind=kind,
                frame_size=frame_size,
            ),
            producer="evaluator",
        )

    def rejection(self, run_id: str) -> ModelRejected:
        return ModelRejected.origin(
            ModelRejectedPayload(
                model_name=self.model,
                run_id=run_id,
                evaluation_id=f"eval-{run_id}",
                metrics={"accuracy": 0.51},
                checks=[AssertionResult(name="accuracy", passed=False, observed=0.51)],
                report_key=f"evaluations/eval-{run_id}.json",
            ),
            producer="evaluator",
        )

    async def deploy(self, *run_ids: str) -> None:
        for run_id in run_ids:
            await self.service.on_approved(self.approval(run_id))

    async def production(self) -> int | None:
        alias = await self.store.get_alias(self.model, "production")
        return alias.version if alias else None

    def present(self) -> list[int]:
        return versions_present(self.repository, name=self.model)


def harness(
    repository: Path,
    *,
    keep_versions: int = 3,
    store: FakeStore | None = None,
    objects: FakeObjects | None = None,
    bus: Bus | None = None,
    policies: ReleasePolicies | None = None,
    rollouts: RolloutPolicies | None = None,
    alias_limit: int = DEFAULT_ALIAS_LIMIT,
) -> Harness:
    """The service on fakes; with ``bus``, it publishes through it, as in __main__."""
    store = store or FakeStore()
    objects = objects or FakeObjects()
    triton = FakeTriton(repository)
    sent = RecordingBus("registry")
    service = RegistryService(
        store,
        Placement(objects, triton, Deployment(repository=repository, keep_versions=keep_versions)),
        bus.publish if bus else sent.publish,
        policies=policies,
        rollouts=rollouts,
        alias_limit=alias_limit,
    )
    return Harness(service, store, objects, triton, sent, repository)


def new_id() -> str:
    """A request id, as the CLI and the console make one per operator action."""
    return str(uuid4())


def wipe(repository: Path) -> None:
    """Lose the repository (a new volume): only object storage still has the versions."""
    shutil.rmtree(repository, ignore_errors=True)
