"""In-memory stand-ins for the registry's store, object store and Triton (unit tests only).

The fake Triton reads the real model repository on disk (the tests export into ``tmp_path`` with
``screwops_serving``), so eviction and restores are checked on real directories. As the real
Triton does (seen on 2.51), a version whose SavedModel is broken fails the load while the model's
other versions keep serving.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from screwops_contracts import (
    AssertionResult,
    Event,
    ModelApproved,
    ModelApprovedPayload,
    ModelRejected,
    ModelRejectedPayload,
)
from screwops_contracts.datasets import Bucket
from screwops_errors import FailedPreconditionError, NotFoundError, UnavailableError
from screwops_registry.service import Deployment, RegistryService
from screwops_registry.store import (
    Alias,
    AliasMove,
    Rejection,
    VersionRecord,
    VersionStatus,
)
from screwops_serving import SAVED_MODEL_DIR, versions_present
from screwops_storage import StoredObject, sha256_hex

BROKEN = b"broken"


class FakeStore:
    """:class:`RegistryStore` in memory, with the unique keys the Mongo indexes enforce."""

    def __init__(self) -> None:
        self.versions: dict[str, VersionRecord] = {}
        self.alias_docs: dict[str, Alias] = {}
        self.rejections: dict[str, Rejection] = {}

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

    async def move_alias(
        self, model_name: str, alias: str, *, expected: int | None, move: AliasMove
    ) -> bool:
        key = f"{model_name}:{alias}"
        current = self.alias_docs.get(key)
        if (current.version if current else None) != expected:
            return False
        history = current.history if current else ()
        self.alias_docs[key] = Alias(model_name, alias, move.to_version, (*history, move))
        return True

    async def record_rejection(self, rejection: Rejection) -> None:
        self.rejections.setdefault(rejection.id, rejection)


class FakeObjects:
    """Directories in memory, keyed like MinIO: (bucket, key) -> bytes."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put_saved_model(self, prefix: str, graph: bytes = b"graph") -> str:
        """What the trainer leaves in the models bucket: a SavedModel directory."""
        self.objects[(Bucket.MODELS, f"{prefix}/saved_model.pb")] = graph
        self.objects[(Bucket.MODELS, f"{prefix}/variables/variables.index")] = b"index"
        return prefix

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for _, k in self.objects if k.startswith(f"{prefix}/"))

    async def get_directory(self, bucket: str, prefix: str, root: Path) -> list[StoredObject]:
        return self._get_directory(bucket, prefix, root)

    def _get_directory(self, bucket: str, prefix: str, root: Path) -> list[StoredObject]:
        keys = [k for b, k in self.objects if b == bucket and k.startswith(f"{prefix}/")]
        if not keys:
            raise NotFoundError(f"nothing stored under {bucket}/{prefix}/")
        stored = []
        for key in sorted(keys):
            path = root / key.removeprefix(f"{prefix}/")
            path.parent.mkdir(parents=True, exist_ok=True)
            data = self.objects[(bucket, key)]
            path.write_bytes(data)
            stored.append(StoredObject(key, sha256_hex(data), len(data)))
        return stored

    async def put_directory(self, bucket: str, root: Path, *, prefix: str) -> list[StoredObject]:
        return self._put_directory(bucket, root, prefix)

    def _put_directory(self, bucket: str, root: Path, prefix: str) -> list[StoredObject]:
        stored = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            data = path.read_bytes()
            self.objects[(bucket, key)] = data
            stored.append(StoredObject(key, sha256_hex(data), len(data)))
        return stored


class FakeTriton:
    """Triton with explicit model control over a real repository directory."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.loaded: dict[str, set[int]] = {}
        self.loads = 0
        self.down = False

    def _answer(self) -> None:
        if self.down:
            raise UnavailableError("Triton did not answer")

    def _broken(self, name: str, version: int) -> bool:
        graph = self.repository / name / str(version) / SAVED_MODEL_DIR / "saved_model.pb"
        return graph.read_bytes().startswith(BROKEN)

    async def load(self, name: str) -> None:
        self._answer()
        self.loads += 1
        present = versions_present(self.repository, name=name)
        if not present:
            raise FailedPreconditionError(f"loading {name}: no version to load")
        broken = [v for v in present if self._broken(name, v)]
        self.loaded[name] = {v for v in present if v not in broken}
        if broken:
            raise FailedPreconditionError(f"loading {name}: version {broken[0]} failed to load")

    async def unload(self, name: str) -> None:
        self._answer()
        self.loaded.pop(name, None)

    async def ready(self, name: str, version: int | None = None) -> bool:
        self._answer()
        served = self.loaded.get(name, set())
        return bool(served) if version is None else version in served

    async def check(self, name: str, version: int, *, timeout_s: float) -> float:
        self._answer()
        if not await self.ready(name, version):
            raise FailedPreconditionError(f"{name} version {version} is not ready in Triton")
        return 0.5


@dataclass
class Sent:
    """What the service emitted (caused events) and published (operators' events)."""

    events: list[Event[Any]] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)

    async def emit(
        self, event_type: type[Event[Any]], payload: BaseModel, *, cause: Event[Any]
    ) -> None:
        await self.publish(event_type.caused_by(cause, payload, producer="registry"))

    async def publish(self, event: Event[Any]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.events.append(event)

    def of(self, event_type: type[Event[Any]]) -> list[Any]:
        return [e for e in self.events if isinstance(e, event_type)]


@dataclass
class Harness:
    """A registry service on fakes, and helpers to feed it approvals."""

    service: RegistryService
    store: FakeStore
    objects: FakeObjects
    triton: FakeTriton
    sent: Sent
    repository: Path
    model: str = "screws"

    def approval(self, run_id: str, *, graph: bytes = b"graph") -> ModelApproved:
        """The evaluator's approval of a run whose SavedModel is in the models bucket."""
        artifact = self.objects.put_saved_model(f"runs/{run_id}/saved_model", graph)
        return ModelApproved.origin(
            ModelApprovedPayload(
                model_name=self.model,
                run_id=run_id,
                evaluation_id=f"eval-{run_id}",
                dataset_id="screws",
                dataset_version=3,
                artifact_key=artifact,
                metrics={"accuracy": 0.98, "threshold": 0.4},
                checks=[AssertionResult(name="accuracy", passed=True, observed=0.98)],
                champion_version=None,
                report_key=f"evaluations/eval-{run_id}.json",
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
) -> Harness:
    store = store or FakeStore()
    objects = objects or FakeObjects()
    triton = FakeTriton(repository)
    sent = Sent()
    service = RegistryService(
        store,
        objects,
        triton,
        sent.emit,
        sent.publish,
        deployment=Deployment(repository=repository, keep_versions=keep_versions),
    )
    return Harness(service, store, objects, triton, sent, repository)


def wipe(repository: Path) -> None:
    """Lose the repository (a new volume): only object storage still has the versions."""
    shutil.rmtree(repository, ignore_errors=True)
