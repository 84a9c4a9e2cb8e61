"""Where ScrewOps keeps things: artifacts in MinIO, metadata in MongoDB (FerretDB v1 natively).

:class:`ObjectStore` stores artifacts with their sha256 and verifies it on every read; object keys
are checked so none can escape its prefix. :func:`database` and :func:`ensure_indexes` give each
service its database and the indexes it owns, using only what FerretDB v1 and MongoDB both
support; :func:`mongo_errors` turns driver errors into the typed errors of ``screwops_errors``.
"""

from screwops_storage.claims import (
    CLAIMED_AT,
    HEARTBEAT_AT,
    ClaimLostError,
    ClaimTimes,
    Held,
    Lease,
    SweepTimes,
    claim_attempt,
    claim_when_free,
    commit_attempt,
    holding,
    keep_sweeping,
    record_after_claim,
    renew_claim,
    sweep_attempts,
)
from screwops_storage.keys import content_key, join_key, sha256_hex, validate_digest, validate_key
from screwops_storage.mongo import (
    BULK_CHUNK,
    Document,
    IndexSpec,
    bulk_write,
    database,
    ensure_indexes,
    mongo_client,
    mongo_errors,
)
from screwops_storage.objects import SHA256_METADATA, ObjectStore, StoredObject, minio_client

__all__ = [
    "BULK_CHUNK",
    "CLAIMED_AT",
    "HEARTBEAT_AT",
    "SHA256_METADATA",
    "ClaimLostError",
    "ClaimTimes",
    "Document",
    "Held",
    "IndexSpec",
    "Lease",
    "ObjectStore",
    "StoredObject",
    "SweepTimes",
    "bulk_write",
    "claim_attempt",
    "claim_when_free",
    "commit_attempt",
    "content_key",
    "database",
    "ensure_indexes",
    "holding",
    "join_key",
    "keep_sweeping",
    "minio_client",
    "mongo_client",
    "mongo_errors",
    "record_after_claim",
    "renew_claim",
    "sha256_hex",
    "sweep_attempts",
    "validate_digest",
    "validate_key",
]
