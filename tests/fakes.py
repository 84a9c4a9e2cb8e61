"""In-memory stand-ins for MinIO and the bus's processed-events collections (unit tests only)."""

from __future__ import annotations

import hashlib
from typing import Any

from pymongo.errors import DuplicateKeyError
from screwops_errors import IntegrityError, InvalidInputError, NotFoundError
from screwops_storage import StoredObject


class FakeObjects:
    """The object-store methods services use, over a dict keyed by (bucket, key)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.puts = 0

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
        return StoredObject(key, hashlib.sha256(data).hexdigest(), len(data))

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes:
        data = self.objects.get((bucket, key))
        if data is None:
            raise NotFoundError(f"{bucket}/{key} does not exist")
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(f"{bucket}/{key} does not hash to {sha256}")
        return data

    async def read_external(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        data = self.objects.get((bucket, key))
        if data is None:
            raise NotFoundError(f"{bucket}/{key} does not exist")
        if len(data) > max_bytes:
            raise InvalidInputError(f"{key} is {len(data)} bytes, over the limit of {max_bytes}")
        return data


class FakeCollection:
    """Just what the bus's processed-events record needs."""

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
