"""MinIO: which principal may read and write which bucket, and MinIO's bucket notifications.

:data:`BUCKET_ACCESS` is the buckets' catalogue, the one place that says who uses each bucket;
the stack makes one MinIO user per principal with the policy :func:`bucket_policy` generates from
it, so a service's credential opens its own buckets and nothing else.

The notifications are MinIO's format, not ours: upstream systems drop files into ``Bucket.DROP``
and MinIO (configured by the stack) publishes one notification per created object to
``BUCKET_EVENTS_TOPIC``. Only the fields ingestion uses are modelled; MinIO's others are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field

from screwops_contracts.datasets import Bucket

BUCKET_EVENTS_TOPIC = "minio.bucket-events"
# The notification target's id in MinIO's MINIO_NOTIFY_KAFKA_*_<ID> settings, and its ARN.
NOTIFY_TARGET_ID = "SCREWOPS"
NOTIFY_TARGET_ARN = f"arn:minio:sqs::{NOTIFY_TARGET_ID}:kafka"


@dataclass(frozen=True)
class BucketAccess:
    """What one MinIO user may do: its policy is generated from this (:func:`bucket_policy`).

    ``delete`` are the buckets it deletes objects from (what attempts that lost a claim wrote,
    swept by the service that claims), ``expire`` those whose retention (a lifecycle rule) it
    sets. Nobody but the stack's root creates buckets: the stack makes every bucket of
    :class:`Bucket` before the services start.
    """

    principal: str
    read: frozenset[Bucket] = frozenset()
    write: frozenset[Bucket] = frozenset()
    delete: frozenset[Bucket] = frozenset()
    expire: frozenset[Bucket] = frozenset()

    @property
    def buckets(self) -> frozenset[Bucket]:
        """Every bucket the principal may touch."""
        return self.read | self.write | self.delete | self.expire


def _access(
    principal: str,
    *,
    read: tuple[Bucket, ...] = (),
    write: tuple[Bucket, ...] = (),
    delete: tuple[Bucket, ...] = (),
    expire: tuple[Bucket, ...] = (),
    dead_letters: bool = True,
) -> BucketAccess:
    """A service's access; every consumer of the bus (all but the console) keeps the bodies of
    dead letters too large for Kafka in ``Bucket.DEAD_LETTERS``."""
    extra = (Bucket.DEAD_LETTERS,) if dead_letters else ()
    return BucketAccess(
        principal,
        read=frozenset(read),
        write=frozenset((*write, *extra)),
        delete=frozenset(delete),
        expire=frozenset(expire),
    )


BUCKET_ACCESS: tuple[BucketAccess, ...] = (
    # Stores uploaded and dropped images and the manifests of the versions they make; reads the
    # drop bucket MinIO notifies it of, and manifests back.
    _access(
        "ingestion",
        read=(Bucket.DROP, Bucket.DATASETS),
        write=(Bucket.IMAGES, Bucket.DATASETS),
    ),
    # Labels versions (reads their images and manifests, writes label sets); reviewed inspection
    # images go back in as a drop, as an upstream system's would.
    _access(
        "labeling",
        read=(Bucket.IMAGES, Bucket.DATASETS, Bucket.INSPECTIONS),
        write=(Bucket.DATASETS, Bucket.DROP),
    ),
    # Validation, the trainer and the evaluator claim their work in attempts, and sweep what
    # attempts that lost their claim wrote (screwops_storage.sweep_attempts).
    _access(
        "validation",
        read=(Bucket.IMAGES, Bucket.DATASETS),
        write=(Bucket.DATASETS,),
        delete=(Bucket.DATASETS,),
    ),
    _access(
        "trainer",
        read=(Bucket.IMAGES, Bucket.DATASETS),
        write=(Bucket.MODELS,),
        delete=(Bucket.MODELS,),
    ),
    _access(
        "evaluator",
        read=(Bucket.IMAGES, Bucket.DATASETS, Bucket.MODELS),
        write=(Bucket.MODELS,),
        delete=(Bucket.MODELS,),
    ),
    # Copies a version from the models bucket into Triton's repository (a directory: Triton
    # never reads MinIO) and keeps the copy it served beside it.
    _access("registry", read=(Bucket.MODELS,), write=(Bucket.MODELS,)),
    _access("gateway", write=(Bucket.INSPECTIONS,), expire=(Bucket.INSPECTIONS,)),
    _access("monitor", read=(Bucket.MODELS,)),
    # The console shows validation reports and, beside a version's metrics, the gate checks of
    # its evaluation report; it consumes no events.
    _access("console", read=(Bucket.DATASETS, Bucket.MODELS), dead_letters=False),
    # The CLI (the same principal as Kafka's operator): `dlq replay` reads dead letters' bodies,
    # `models export` a version's files; it reads any bucket and drops files as upstream does.
    BucketAccess("operator", read=frozenset(Bucket), write=frozenset({Bucket.DROP})),
    # Systems outside ScrewOps (Kafka's upstream principal) feed images through the drop bucket.
    BucketAccess("upstream", write=frozenset({Bucket.DROP})),
)
"""Each MinIO principal's buckets, from what the code reads and writes (one entry each)."""


def bucket_access() -> dict[str, BucketAccess]:
    """:data:`BUCKET_ACCESS` by principal."""
    return {entry.principal: entry for entry in BUCKET_ACCESS}


READ_ACTIONS = ("s3:GetObject",)
WRITE_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload")
"""Writing includes reading: writes are idempotent, so a writer first looks at what a key holds
(HeadObject, which MinIO allows with GetObject)."""
DELETE_ACTIONS = ("s3:DeleteObject",)
EXPIRE_ACTIONS = ("s3:PutLifecycleConfiguration", "s3:GetLifecycleConfiguration")
BUCKET_ACTIONS = ("s3:ListBucket", "s3:GetBucketLocation")
"""On each bucket a principal touches: list its keys, check it exists (HeadBucket), and find its
region (the minio client asks before its first request)."""


def bucket_policy(access: BucketAccess) -> dict[str, Any]:
    """The IAM policy (AWS's JSON, as MinIO takes it) allowing exactly ``access``: object actions
    on ``arn:aws:s3:::<bucket>/*``, bucket actions on ``arn:aws:s3:::<bucket>``, nothing else."""

    def objects(buckets: frozenset[Bucket]) -> list[str]:
        return [f"arn:aws:s3:::{bucket}/*" for bucket in sorted(buckets)]

    def buckets(names: frozenset[Bucket]) -> list[str]:
        return [f"arn:aws:s3:::{bucket}" for bucket in sorted(names)]

    wanted = [
        (BUCKET_ACTIONS, buckets(access.buckets)),
        (READ_ACTIONS, objects(access.read)),
        (WRITE_ACTIONS, objects(access.write)),
        (DELETE_ACTIONS, objects(access.delete)),
        (EXPIRE_ACTIONS, buckets(access.expire)),
    ]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": list(actions), "Resource": resources}
            for actions, resources in wanted
            if resources
        ],
    }


def policy_name(principal: str) -> str:
    """The name of ``principal``'s policy in MinIO."""
    return f"screwops-{principal}"


class _MinioModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class S3Object(_MinioModel):
    key: str = Field(description="URL-encoded object key.")
    size: int = 0
    etag: str = Field("", alias="eTag")
    sequencer: str = ""


class S3BucketRef(_MinioModel):
    name: str


class S3Entity(_MinioModel):
    bucket: S3BucketRef
    object: S3Object


class BucketRecord(_MinioModel):
    event_name: str = Field(alias="eventName")
    s3: S3Entity

    @property
    def key(self) -> str:
        """The object key, decoded (MinIO URL-encodes it in records)."""
        return unquote_plus(self.s3.object.key)


class BucketNotification(_MinioModel):
    """One MinIO notification: the event name, ``bucket/key``, and the records."""

    event_name: str = Field(alias="EventName")
    key: str = Field(alias="Key", description="bucket/key of the object.")
    records: list[BucketRecord] = Field(alias="Records", min_length=1)

    def identity(self) -> str:
        """What makes a notification unique, for the processed-events record."""
        record = self.records[0]
        return f"{self.key}@{record.s3.object.sequencer or record.s3.object.etag}"
