"""``ObjectStore.put_once`` over a stand-in MinIO client: a named artifact is written once, the
same bytes again are a no-op, and other bytes are refused instead of replacing it."""

from __future__ import annotations

import io
from typing import Any, cast

import pytest
from minio import Minio
from minio.datatypes import Object
from minio.error import S3Error
from screwops_errors import AlreadyExistsError
from screwops_storage import ObjectStore, sha256_hex


class _Minio:
    """``stat_object`` and ``put_object`` over a dict, as MinIO answers them."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, dict[str, str]]] = {}
        self.puts = 0

    def stat_object(self, bucket: str, key: str) -> Object:
        if (bucket, key) not in self.objects:
            raise S3Error(cast(Any, None), "NoSuchKey", "missing", key, "r", "h")
        data, metadata = self.objects[(bucket, key)]
        return Object(bucket, key, size=len(data), metadata=metadata)

    def put_object(
        self,
        bucket: str,
        key: str,
        data: io.BytesIO,
        length: int,
        *,
        content_type: str,
        metadata: dict[str, str],
    ) -> None:
        self.puts += 1
        self.objects[(bucket, key)] = (
            data.read(length),
            {f"x-amz-meta-{k}": v for k, v in metadata.items()},
        )


async def test_put_once_writes_then_repeats_as_a_no_op_and_refuses_other_bytes() -> None:
    client = _Minio()
    store = ObjectStore(cast(Minio, client))

    first = await store.put_once("datasets", "screws/v1/manifest.json", b"one")
    again = await store.put_once("datasets", "screws/v1/manifest.json", b"one")
    with pytest.raises(AlreadyExistsError, match="never overwritten"):
        await store.put_once("datasets", "screws/v1/manifest.json", b"two")

    assert first == again
    assert first.sha256 == sha256_hex(b"one")
    assert client.puts == 1
    assert client.objects[("datasets", "screws/v1/manifest.json")][0] == b"one"
