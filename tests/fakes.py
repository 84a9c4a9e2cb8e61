"""In-memory stand-ins shared by the unit tests: MinIO, the bus (one that records what was sent,
and a real :class:`Bus` on in-memory processed-events collections), Triton over a real model
repository, and a gRPC context."""

from __future__ import annotations

import asyncio
import copy
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import grpc
from motor.motor_asyncio import AsyncIOMotorDatabase
from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError
from pymongo.results import UpdateResult
from screwops_bus import Bus, Outbox, Relay, RetryPolicy
from screwops_contracts import Event
from screwops_contracts.datasets import Bucket
from screwops_errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from screwops_serving import SAVED_MODEL_DIR, versions_present
from screwops_settings import StackSettings
from screwops_storage import StoredObject
from screwops_storage.objects import ListedObject

from tests.support import eventually

P = TypeVar("P", bound=BaseModel)
E = TypeVar("E", bound=Event[Any])

# A SavedModel graph starting with these bytes fails to load in :class:`RepositoryTriton`.
BROKEN = b"broken"


class FakeObjects:
    """The object-store methods services use, over a dict keyed by (bucket, key)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.buckets: set[str] = set()
        self.puts = 0
        self.retention_days: dict[str, int | None] = {}
        self.modified: dict[tuple[str, str], datetime] = {}
        """When each object was last written (a test may move it back to age it)."""

    async def ensure_buckets(self, *names: str) -> None:
        self.buckets.update(names)

    async def expire_after(self, bucket: str, days: int | None) -> None:
        self.retention_days[bucket] = days

    async def put_content(
        self,
        bucket: str,
        data: bytes,
        *,
        prefix: str,
        content_type: str = "",
        check_existing: bool = True,
    ) -> StoredObject:
        sha = hashlib.sha256(data).hexdigest()
        return await self.put_named(bucket, f"{prefix}/{sha[:2]}/{sha}", data)

    async def put_named(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ""
    ) -> StoredObject:
        self.puts += 1
        self.objects[(bucket, key)] = data
        self.modified[(bucket, key)] = datetime.now(UTC)
        return StoredObject(key, hashlib.sha256(data).hexdigest(), len(data))

    async def put_once(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ""
    ) -> StoredObject:
        """As :meth:`screwops_storage.ObjectStore.put_once`: other bytes are never written."""
        held = self.objects.get((bucket, key))
        if held is not None and held != data:
            raise AlreadyExistsError(f"{bucket}/{key} already holds other bytes")
        return await self.put_named(bucket, key, data)

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes:
        data = self.objects.get((bucket, key))
        if data is None:
            raise NotFoundError(f"{bucket}/{key} does not exist")
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(f"{bucket}/{key} does not hash to {sha256}")
        return data

    async def list_keys(self, bucket: str, prefix: str) -> list[str]:
        return sorted(k for b, k in self.objects if b == bucket and k.startswith(f"{prefix}/"))

    async def list_objects(self, bucket: str, prefix: str) -> list[ListedObject]:
        start = f"{prefix}/" if prefix else ""
        return sorted(
            ListedObject(k, self.modified.get((b, k), datetime.now(UTC)))
            for b, k in self.objects
            if b == bucket and k.startswith(start)
        )

    async def delete_objects(self, bucket: str, keys: Sequence[str]) -> None:
        for key in keys:
            self.objects.pop((bucket, key), None)
            self.modified.pop((bucket, key), None)

    async def read_external(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        data = self.objects.get((bucket, key))
        if data is None:
            raise NotFoundError(f"{bucket}/{key} does not exist")
        if len(data) > max_bytes:
            raise InvalidInputError(f"{key} is {len(data)} bytes, over the limit of {max_bytes}")
        return data

    async def put_directory(self, bucket: str, root: Path, *, prefix: str) -> list[StoredObject]:
        """Every file under ``root`` at ``<prefix>/<relative path>``, as the real store does."""
        return [await self.put_named(bucket, k, data) for k, data in _tree(root, prefix).items()]

    async def get_directory(self, bucket: str, prefix: str, root: Path) -> list[StoredObject]:
        keys = self.keys(bucket, prefix)
        if not keys:
            raise NotFoundError(f"nothing stored under {bucket}/{prefix}/")
        stored = []
        for key in keys:
            path = root / key.removeprefix(f"{prefix}/")
            path.parent.mkdir(parents=True, exist_ok=True)
            data = self.objects[(bucket, key)]
            path.write_bytes(data)
            stored.append(StoredObject(key, hashlib.sha256(data).hexdigest(), len(data)))
        return stored

    def keys(self, bucket: str, prefix: str) -> list[str]:
        """The keys stored under ``<prefix>/`` in ``bucket``, sorted."""
        return sorted(k for b, k in self.objects if b == bucket and k.startswith(f"{prefix}/"))

    def put_saved_model(self, prefix: str, graph: bytes = b"graph") -> str:
        """What the trainer leaves in the models bucket: a SavedModel directory."""
        self.objects[(Bucket.MODELS, f"{prefix}/saved_model.pb")] = graph
        self.objects[(Bucket.MODELS, f"{prefix}/variables/variables.index")] = b"index"
        return prefix


def _tree(root: Path, prefix: str) -> dict[str, bytes]:
    return {
        f"{prefix}/{path.relative_to(root).as_posix()}": path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


class FakeCollection:
    """Just what the bus's processed-events record and outbox and the claims of attempts need:
    ``_id`` lookups, filters of equal fields and ``$exists``, and updates (of one document or
    many) by ``$set``, ``$unset`` and ``$push``, and an upserting ``$inc`` of one."""

    def __init__(self) -> None:
        self.docs: dict[Any, dict[str, Any]] = {}
        self.updated = 0
        """Updates that matched a document."""

    async def find_one(self, query: dict[str, Any], projection: Any = None) -> Any:
        return copy.deepcopy(self.docs.get(query["_id"]))

    def find(self, query: dict[str, Any], projection: Any = None) -> _FakeCursor:
        return _FakeCursor([copy.deepcopy(d) for d in self.docs.values() if _matches(d, query)])

    async def insert_one(self, doc: dict[str, Any]) -> None:
        if doc["_id"] in self.docs:
            raise DuplicateKeyError("duplicate")
        self.docs[doc["_id"]] = copy.deepcopy(doc)

    async def update_one(self, query: dict[str, Any], update: dict[str, Any]) -> UpdateResult:
        doc = self.docs.get(query["_id"])
        if doc is None or not _matches(doc, query):
            return UpdateResult({"n": 0, "nModified": 0}, acknowledged=True)
        self._update(doc, update)
        return UpdateResult({"n": 1, "nModified": 1}, acknowledged=True)

    async def update_many(self, query: dict[str, Any], update: dict[str, Any]) -> UpdateResult:
        matched = [doc for doc in self.docs.values() if _matches(doc, query)]
        for doc in matched:
            self._update(doc, update)
        return UpdateResult({"n": len(matched), "nModified": len(matched)}, acknowledged=True)

    async def find_one_and_update(
        self,
        query: dict[str, Any],
        update: dict[str, Any],
        *,
        upsert: bool = False,
        return_document: Any = None,
    ) -> dict[str, Any] | None:
        """The updated document (``return_document`` AFTER is the one kind used); an upsert
        whose ``_id`` is taken by a document the query does not match raises as MongoDB does."""
        doc = self.docs.get(query["_id"])
        if doc is None or not _matches(doc, query):
            if not upsert:
                return None
            if doc is not None:
                raise DuplicateKeyError("duplicate")
            doc = self.docs[query["_id"]] = {
                field: value for field, value in query.items() if not isinstance(value, dict)
            }
            doc.update(copy.deepcopy(update.get("$setOnInsert", {})))
        for field, step in update.get("$inc", {}).items():
            doc[field] = doc.get(field, 0) + step
        self._update(doc, update)
        return copy.deepcopy(doc)

    def _update(self, doc: dict[str, Any], update: dict[str, Any]) -> None:
        for field, value in update.get("$set", {}).items():
            doc[field] = copy.deepcopy(value)
        for field in update.get("$unset", {}):
            doc.pop(field, None)
        for field, value in update.get("$push", {}).items():
            doc.setdefault(field, []).append(copy.deepcopy(value))
        self.updated += 1


class _FakeCursor:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self._docs = docs

    def limit(self, count: int) -> _FakeCursor:
        return _FakeCursor(self._docs[:count])

    async def to_list(self, length: int | None) -> list[dict[str, Any]]:
        return self._docs[:length]


def _matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    for field, wanted in query.items():
        if isinstance(wanted, dict) and "$exists" in wanted:
            if (field in doc) != wanted["$exists"]:
                return False
        elif doc.get(field) != wanted:
            return False
    return True


class FakeDatabase(dict[str, FakeCollection]):
    """The processed-events collections the bus keeps, or documents with an outbox, in memory."""

    def __missing__(self, name: str) -> FakeCollection:
        self[name] = FakeCollection()
        return self[name]


class RecordingBus(list[Event[Any]]):
    """The bus's sending side as services are handed it (:meth:`emit`, an
    :class:`screwops_bus.Emit`; :meth:`publish`, a :class:`screwops_bus.Publish`), keeping what
    went out in order, each event built as :class:`screwops_bus.Bus` of ``producer`` builds it.

    A broker in trouble, for the tests that need one: while ``gate`` is an unset event, every send
    waits on it (Kafka stalls); while ``down``, every send fails (an outage); ``failures`` are
    raised by the next sends, one each (the broker did not acknowledge them).
    """

    def __init__(self, producer: str) -> None:
        super().__init__()
        self.producer = producer
        self.gate: asyncio.Event | None = None
        self.down = False
        self.failures: list[Exception] = []

    async def emit(self, event_type: type[Event[P]], payload: P, /, *, cause: Event[Any]) -> None:
        await self.publish(event_type.caused_by(cause, payload, producer=self.producer))

    async def publish(self, event: Event[Any], /) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise UnavailableError("Kafka did not answer")
        if self.failures:
            raise self.failures.pop(0)
        self.append(event)

    def of(self, event_type: type[E]) -> list[E]:
        """What went out as ``event_type``: the events sent to its topic."""
        return [e for e in self if isinstance(e, event_type)]


async def relayed(outbox: Outbox, published: RecordingBus, count: int) -> None:
    """Run the outbox relay as a service's ``__main__`` does, beside the service, until
    ``count`` events went out and nothing is pending."""
    relay = asyncio.create_task(Relay(outbox, published.publish, interval=0.01).run())

    async def done() -> bool | None:
        return (len(published) >= count and not await outbox.pending()) or None

    try:
        await eventually(done, within=2, what="the outbox relay", interval=0.01)
    finally:
        relay.cancel()


def memory_bus(service: str, *, max_attempts: int = 2) -> Bus:
    """A real :class:`Bus` for ``service`` on in-memory processed-events, with quick retries:
    run it under FastStream's ``TestKafkaBroker(bus.broker)``, as ``__main__`` would wire it."""
    return Bus(
        StackSettings(),
        service=service,
        db=cast(AsyncIOMotorDatabase[Any], FakeDatabase()),
        retry=RetryPolicy(max_attempts=max_attempts, initial_wait=0.001, max_wait=0.002),
    )


class RepositoryTriton:
    """Triton with explicit model control over a real model repository on disk.

    A load serves every version present (``loaded``: model -> version -> its ``saved_model.pb``
    bytes, ``loads``: what each load left served); a version whose graph starts with
    :data:`BROKEN` fails the load while the model's other versions keep serving, as the real
    Triton does (seen on 2.51). ``down`` makes every call fail as an unreachable server.
    """

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.loaded: dict[str, dict[int, bytes]] = {}
        self.loads: list[tuple[str, frozenset[int]]] = []
        self.down = False

    def _answer(self) -> None:
        if self.down:
            raise UnavailableError("Triton did not answer")

    def graph(self, name: str, version: int) -> bytes:
        path = self.repository / name / str(version) / SAVED_MODEL_DIR / "saved_model.pb"
        return path.read_bytes()

    async def load(self, name: str, *, timeout_s: float | None = None) -> None:
        self._answer()
        present = versions_present(self.repository, name=name)
        if not present:
            raise FailedPreconditionError(f"loading {name}: no version to load")
        graphs = {v: self.graph(name, v) for v in present}
        broken = [v for v, g in graphs.items() if g.startswith(BROKEN)]
        self.loaded[name] = {v: g for v, g in graphs.items() if v not in broken}
        self.loads.append((name, frozenset(self.loaded[name])))
        if broken:
            raise FailedPreconditionError(f"loading {name}: version {broken[0]} failed to load")

    async def unload(self, name: str, *, timeout_s: float | None = None) -> None:
        self._answer()
        self.loaded.pop(name, None)

    async def ready(self, name: str, version: int | None = None) -> bool:
        self._answer()
        served = self.loaded.get(name, {})
        return bool(served) if version is None else version in served


class AbortedError(Exception):
    """What :meth:`FakeContext.abort` raises: the status and details a client would get."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code, self.details = code, details


class FakeContext:
    """The part of a gRPC servicer context the APIs use: abort, the deadline's remainder, and
    the connection's auth context (a verified client certificate's CN, when ``client`` names
    one)."""

    def __init__(self, remaining: float | None = None, client: str | None = None) -> None:
        self.remaining = remaining
        self.client = client

    def time_remaining(self) -> float | None:
        return self.remaining

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": [self.client.encode()]} if self.client else {}

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise AbortedError(code, details)


class HeldStore:
    """A shared store as one replica sees it: its calls named in ``held`` wait until
    :attr:`release` is set (:attr:`reached` says one got there), so a test can let a second
    replica run the same work to the end in between."""

    def __init__(self, store: Any, *held: str) -> None:
        self._store = store
        self._held = held
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if name not in self._held:
            return method

        async def held(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            await self.release.wait()
            return await method(*args, **kwargs)

        return held
