"""``ObjectStore.expire_after`` over a stand-in MinIO client: a bucket's retention is one
lifecycle rule, set again unchanged, and removed (objects kept for ever) even when none was set."""

from __future__ import annotations

from typing import Any, cast

from minio import Minio
from minio.error import S3Error
from minio.lifecycleconfig import LifecycleConfig
from screwops_storage import ObjectStore


class _Minio:
    """The bucket lifecycle calls, over a dict, as MinIO answers them."""

    def __init__(self) -> None:
        self.lifecycles: dict[str, LifecycleConfig] = {}

    def set_bucket_lifecycle(self, bucket: str, config: LifecycleConfig) -> None:
        self.lifecycles[bucket] = config

    def delete_bucket_lifecycle(self, bucket: str) -> None:
        if bucket not in self.lifecycles:
            raise S3Error(cast(Any, None), "NoSuchLifecycleConfiguration", "none", bucket, "r", "h")
        del self.lifecycles[bucket]


async def test_a_retention_is_one_expiration_rule_and_none_removes_it() -> None:
    client = _Minio()
    store = ObjectStore(cast(Minio, client))

    await store.expire_after("inspections", 30)
    await store.expire_after("inspections", 30)
    [rule] = client.lifecycles["inspections"].rules
    assert rule.expiration is not None
    assert rule.expiration.days == 30
    assert rule.rule_filter is not None
    assert rule.rule_filter.prefix == ""

    await store.expire_after("inspections", None)
    await store.expire_after("inspections", None)
    assert client.lifecycles == {}
