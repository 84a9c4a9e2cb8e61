"""MinIO's bucket notifications, as MinIO publishes them to Kafka.

This is MinIO's format, not ours: upstream systems drop files into ``Bucket.DROP`` and MinIO
(configured by the stack) publishes one notification per created object to
``BUCKET_EVENTS_TOPIC``. Only the fields ingestion uses are modelled; MinIO's others are ignored.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field

BUCKET_EVENTS_TOPIC = "minio.bucket-events"
# The notification target's id in MinIO's MINIO_NOTIFY_KAFKA_*_<ID> settings, and its ARN.
NOTIFY_TARGET_ID = "SCREWOPS"
NOTIFY_TARGET_ARN = f"arn:minio:sqs::{NOTIFY_TARGET_ID}:kafka"


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
