"""MinIO's security on every stack: a generated root password, one user per principal of the
buckets' catalogue (``screwops_contracts.minio.BUCKET_ACCESS``) with a generated secret key, and
the policy generated for it, which opens only that principal's buckets.

The secrets are made on the first ``make up`` under the stack home (``secrets/minio/``, readable
by the owner only) and kept afterwards. MinIO takes its root credential from its environment at
each start and keeps none in its data, so a MinIO started with the development root of earlier
stacks takes the generated one when it is next started, its data and users kept. The buckets,
the users and their policies are set again after every start (:func:`provision`, idempotent),
so a change to the catalogue reaches MinIO with the next ``make up``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from minio import Minio, MinioAdmin
from minio.credentials.providers import StaticProvider
from minio.error import S3Error
from minio.notificationconfig import NotificationConfig, QueueConfig
from pydantic import SecretStr
from screwops_contracts.datasets import Bucket
from screwops_contracts.minio import (
    NOTIFY_TARGET_ARN,
    bucket_access,
    bucket_policy,
    policy_name,
)
from screwops_settings import DEVELOPMENT_MINIO_SECRET, MinioSettings, minio_secret_file

from screwops_stack.certificates import write_private
from screwops_stack.kafka_security import StaleStackError

ROOT = "admin"
"""MinIO's root user: the stack manager makes the buckets and users as it, and the tests act as
it (they make and remove objects in every bucket). The same name as Kafka's admin."""
DEVELOPMENT_ROOT = "screwops"
"""The root user of stacks from before the generated root password (with
:data:`screwops_settings.DEVELOPMENT_MINIO_SECRET`)."""
_REFUSED = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch"})


def principals() -> list[str]:
    """Every MinIO login of the stack: the root and each user of the catalogue."""
    return [ROOT, *sorted(bucket_access())]


def ensure_passwords(home: Path) -> dict[str, str]:
    """Each principal's secret key, generated (and written 0600) the first time it is asked for."""
    passwords = {}
    for name in principals():
        path = minio_secret_file(home, name)
        if not path.is_file():
            write_private(path, secrets.token_urlsafe(32))
        passwords[name] = path.read_text().strip()
    return passwords


def root_settings(minio: MinioSettings, home: Path) -> MinioSettings:
    """``minio`` logging in as the root, with the root password of ``home``."""
    password = minio_secret_file(home, ROOT).read_text().strip()
    return minio.model_copy(update={"access_key": ROOT, "secret_key": SecretStr(password)})


def _client(minio: MinioSettings, access_key: str, secret_key: str) -> Minio:
    return Minio(minio.endpoint, access_key=access_key, secret_key=secret_key, secure=minio.secure)


def check_root(root: MinioSettings) -> None:
    """Refuse a MinIO that does not take the generated root password, saying what to run: one
    still running with the development root of an earlier stack takes the generated one only
    when it starts again."""
    secret = root.secret_key.get_secret_value() if root.secret_key else ""
    try:
        _client(root, root.access_key, secret).list_buckets()
    except S3Error as error:
        if error.code not in _REFUSED:
            raise
    else:
        return
    try:
        _client(root, DEVELOPMENT_ROOT, DEVELOPMENT_MINIO_SECRET).list_buckets()
    except S3Error as error:
        if error.code not in _REFUSED:
            raise
        raise StaleStackError(
            "MinIO refuses the stack's root password (secrets/minio/admin of the stack home) "
            "and it is not the development root either; start MinIO with that password."
        ) from None
    raise StaleStackError(
        "MinIO still runs with the development root password of earlier stacks; restart it to "
        "take the generated one (its data and users are kept): "
        "`uv run screwops stack down minio && make up`."
    )


def provision(root: MinioSettings, passwords: dict[str, str]) -> None:
    """As the root: every bucket of :class:`Bucket`, the drop bucket's notification to ingestion
    (through Kafka), and each principal's user with its secret and its generated policy (its
    only one). Running it again changes nothing but what the catalogue changed."""
    check_root(root)
    secret = root.secret_key.get_secret_value() if root.secret_key else ""
    client = _client(root, root.access_key, secret)
    for bucket in Bucket:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    # Upstream systems drop files into the drop bucket; MinIO tells ingestion through Kafka.
    client.set_bucket_notification(
        Bucket.DROP,
        NotificationConfig(
            queue_config_list=[
                QueueConfig(
                    events=["s3:ObjectCreated:*"], config_id="ingestion", queue=NOTIFY_TARGET_ARN
                )
            ]
        ),
    )
    admin = MinioAdmin(
        endpoint=root.endpoint,
        credentials=StaticProvider(root.access_key, secret),
        secure=root.secure,
    )
    for name, access in sorted(bucket_access().items()):
        policy = policy_name(name)
        admin.policy_add(policy, policy=bucket_policy(access))
        admin.user_add(name, passwords[name])
        admin.policy_set(policy, user=name)
