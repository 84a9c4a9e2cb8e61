"""MongoDB clients, per-service index bootstrap and typed errors, for FerretDB v1 and MongoDB.

The native stack runs FerretDB v1 and docker-compose runs MongoDB, so only what both support is
used here: plain CRUD and single-collection indexes. There are no transactions, change streams,
``$lookup``/``$facet`` or TTL indexes; idempotent writes with deterministic ids take their place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import DeleteOne, InsertOne, UpdateOne
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    WTimeoutError,
)
from screwops_errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    PermissionDeniedError,
    ScrewOpsError,
    UnauthenticatedError,
    UnavailableError,
)
from screwops_settings import MongoSettings

_WriteOp = UpdateOne | InsertOne[Any] | DeleteOne

__all__ = [
    "Document",
    "IndexSpec",
    "database",
    "ensure_indexes",
    "mongo_client",
    "mongo_errors",
]

Document = dict[str, Any]
"""The document type of every client made here."""

_UNAUTHORIZED = 13
_AUTHENTICATION_FAILED = 18


def mongo_client(
    settings: MongoSettings, *, appname: str = "screwops", timeout_ms: int = 5000
) -> AsyncIOMotorClient[Document]:
    """A motor client that fails in seconds when the server is gone, not after pymongo's 30 s.

    ``tz_aware`` makes stored datetimes come back as aware UTC values, so they compare equal to
    the ones written; ``uuidRepresentation`` lets event ids (UUIDs) be stored as they are; the
    ``appname`` shows in the server's logs and current-op output to tell services apart.
    """
    return AsyncIOMotorClient(
        settings.uri.get_secret_value(),
        appname=appname,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
    )


def database(
    settings: MongoSettings, name: str | None = None, *, appname: str = "screwops"
) -> AsyncIOMotorDatabase[Document]:
    """The service's database (``settings.database`` unless named) on a new client.

    A service holds one for its lifetime and closes it with ``db.client.close()`` on shutdown.
    """
    return mongo_client(settings, appname=appname)[name or settings.database]


@dataclass(frozen=True)
class IndexSpec:
    """An index an owning service needs; declared next to the service's store, created at start.

    Only ascending/descending keys: FerretDB v1 has no TTL, text or geo indexes. Without a
    ``name`` the server's usual one (``field_1_other_-1``) is used.
    """

    collection: str
    keys: tuple[tuple[str, Literal[1, -1]], ...]
    unique: bool = False
    name: str | None = None

    @property
    def index_name(self) -> str:
        """The name the index has on the server, given or generated as MongoDB does."""
        return self.name or "_".join(f"{field}_{direction}" for field, direction in self.keys)


async def ensure_indexes(db: AsyncIOMotorDatabase[Document], specs: Iterable[IndexSpec]) -> None:
    """Create the indexes a service relies on (its unique keys are what make writes idempotent).

    Every instance runs this on start, so an index that already exists as declared is left
    alone. Existing indexes are compared here rather than left to the server because FerretDB v1
    neither reports a changed option nor survives ``createIndexes`` of several existing indexes
    at once; indexes are therefore created one at a time.

    Raises:
        FailedPreconditionError: an index with that name or those keys exists with other keys or
            options; changing an index is a migration, not something to do silently on start-up.
        UnavailableError: the server did not answer.
    """
    for spec in specs:
        collection = db[spec.collection]
        with mongo_errors():
            existing = await collection.index_information()
            if not _declared(spec, existing):
                await collection.create_index(
                    list(spec.keys), name=spec.index_name, unique=spec.unique
                )


def _declared(spec: IndexSpec, existing: Mapping[str, Any]) -> bool:
    """Whether ``spec`` already exists as declared; refuse an index that differs from it."""
    for name, info in existing.items():
        same_keys = [(field, int(direction)) for field, direction in info["key"]] == list(spec.keys)
        if name != spec.index_name and not same_keys:
            continue
        if name == spec.index_name and same_keys and bool(info.get("unique")) == spec.unique:
            return True
        raise FailedPreconditionError(
            f"index {name!r} on {spec.collection} ({info}) conflicts with the declared {spec}"
        )
    return False


@contextmanager
def mongo_errors() -> Iterator[None]:
    """Re-raise driver errors as typed ones, so the bus retries outages and DLQs the rest.

    Works around awaits too (``with mongo_errors(): await coll.insert_one(doc)``). A duplicate
    key becomes :class:`AlreadyExistsError`, which idempotent handlers treat as "already done".
    Messages stay generic because they may reach gRPC clients; the driver error is the cause.
    """
    try:
        yield
    except (ConnectionFailure, OperationFailure) as error:
        mapped = _translate(error)
        if mapped is None:
            raise
        raise mapped from error


def _translate(error: ConnectionFailure | OperationFailure) -> ScrewOpsError | None:
    if isinstance(error, ConnectionFailure | WTimeoutError):
        return UnavailableError(f"MongoDB did not answer ({type(error).__name__})")
    if isinstance(error, ExecutionTimeout):
        return DeadlineExceededError("MongoDB query ran past its time limit")
    if isinstance(error, DuplicateKeyError):
        return AlreadyExistsError("a document with that unique key already exists")
    if error.code == _AUTHENTICATION_FAILED:
        return UnauthenticatedError("MongoDB refused the credentials")
    if error.code == _UNAUTHORIZED:
        return PermissionDeniedError("MongoDB denied the operation")
    return None


# FerretDB v1 (SQLite backend) keeps one pooled SQLite connection open per statement of an
# update command until the whole command ends, and the pool holds 100: a bulk write of more
# statements than that waits forever on itself and stalls the server for every client. Bulk
# writes therefore go out in chunks well below the pool size (seen here; MongoDB is unaffected).
BULK_CHUNK = 50


async def bulk_write(
    collection: AsyncIOMotorCollection[Document], operations: Sequence[_WriteOp]
) -> None:
    """Unordered bulk write in chunks that FerretDB v1 can serve (see ``BULK_CHUNK``)."""
    with mongo_errors():
        for start in range(0, len(operations), BULK_CHUNK):
            await collection.bulk_write(list(operations[start : start + BULK_CHUNK]), ordered=False)
