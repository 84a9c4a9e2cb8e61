"""In-memory stand-ins for validation's store, object store, emit and the bus's database."""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError
from screwops_contracts import Event
from screwops_errors import IntegrityError, NotFoundError
from screwops_storage import StoredObject
from screwops_validation.store import ReportRecord

P = TypeVar("P", bound=BaseModel)


class FakeStore:
    def __init__(self) -> None:
        self.reports: dict[str, ReportRecord] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def save_report(self, record: ReportRecord) -> None:
        self.reports[record.id] = record


class FakeObjects:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    async def put_content(
        self, bucket: str, data: bytes, *, prefix: str, content_type: str = ""
    ) -> StoredObject:
        sha = hashlib.sha256(data).hexdigest()
        return await self.put_named(bucket, f"{prefix}/{sha[:2]}/{sha}", data)

    async def put_named(
        self, bucket: str, key: str, data: bytes, *, content_type: str = ""
    ) -> StoredObject:
        self.objects[(bucket, key)] = data
        return StoredObject(key, hashlib.sha256(data).hexdigest(), len(data))

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes:
        data = self.objects.get((bucket, key))
        if data is None:
            raise NotFoundError(f"{bucket}/{key} does not exist")
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(f"{bucket}/{key} does not hash to {sha256}")
        return data


class Emitted(list[Event[Any]]):
    """Collects what the service emits, as the bus would build it."""

    async def __call__(
        self, event_type: type[Event[P]], payload: P, /, *, cause: Event[Any]
    ) -> None:
        self.append(event_type.caused_by(cause, payload, producer="validation"))


class FakeCollection:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    async def find_one(self, query: dict[str, Any], projection: Any = None) -> Any:
        return self.docs.get(query["_id"])

    async def insert_one(self, doc: dict[str, Any]) -> None:
        if doc["_id"] in self.docs:
            raise DuplicateKeyError("duplicate")
        self.docs[doc["_id"]] = doc


class FakeDatabase(dict[str, FakeCollection]):
    """The processed-events collections the bus keeps, in memory."""

    def __missing__(self, name: str) -> FakeCollection:
        self[name] = FakeCollection()
        return self[name]
