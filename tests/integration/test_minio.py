"""MinIO is a real S3 server: a 5 MB object comes back byte for byte, checked by sha256."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator

import pytest
from screwops_settings import StackSettings

from tests.support import minio_client, unique


@pytest.fixture
def bucket(settings: StackSettings) -> Iterator[str]:
    name = unique("it")
    s3 = minio_client(settings.minio)
    s3.make_bucket(name)
    yield name
    for obj in s3.list_objects(name, recursive=True):
        s3.remove_object(name, obj.object_name)
    s3.remove_bucket(name)


def test_a_5mb_object_round_trips_with_its_checksum(settings: StackSettings, bucket: str) -> None:
    payload = os.urandom(5 * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    s3 = minio_client(settings.minio)
    s3.put_object(bucket, "blob", io.BytesIO(payload), len(payload), metadata={"sha256": digest})

    response = s3.get_object(bucket, "blob")
    try:
        body = response.read()
    finally:
        response.close()
        response.release_conn()
    stat = s3.stat_object(bucket, "blob")

    assert hashlib.sha256(body).hexdigest() == digest
    assert stat.size == len(payload)
    assert (stat.metadata or {}).get("x-amz-meta-sha256") == digest
