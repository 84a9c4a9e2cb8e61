"""MinIO's users: the buckets' catalogue, the policies generated from it, the stack's secrets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from screwops_contracts import OPERATOR, UPSTREAM
from screwops_contracts.datasets import Bucket
from screwops_contracts.minio import (
    BUCKET_ACCESS,
    BucketAccess,
    bucket_access,
    bucket_policy,
    policy_name,
)
from screwops_settings import MinioSettings, minio_secret_file
from screwops_settings.services import SERVICES
from screwops_stack import minio_security

# What each service's code reads and writes (grep `Bucket.` in services/), written out here so
# that a change to the catalogue is a change to this table too.
EXPECTED = {
    "ingestion": ({"ingest-drop", "datasets"}, {"images", "datasets", "dead-letters"}),
    "labeling": (
        {"images", "datasets", "inspections"},
        {"datasets", "ingest-drop", "dead-letters"},
    ),
    "validation": ({"images", "datasets"}, {"datasets", "dead-letters"}),
    "trainer": ({"images", "datasets"}, {"models", "dead-letters"}),
    "evaluator": ({"images", "datasets", "models"}, {"models", "dead-letters"}),
    "registry": ({"models"}, {"models", "dead-letters"}),
    "gateway": (set(), {"inspections", "dead-letters"}),
    "monitor": ({"models"}, {"dead-letters"}),
    "console": ({"datasets", "models"}, set()),
}


def _resources(policy: dict[str, object], action: str) -> set[str]:
    statements = policy["Statement"]
    assert isinstance(statements, list)
    return {r for s in statements if action in s["Action"] for r in s["Resource"]}


def test_every_service_and_the_operator_and_upstream_have_one_entry() -> None:
    names = [entry.principal for entry in BUCKET_ACCESS]
    assert len(names) == len(set(names))
    assert set(names) == {s.name for s in SERVICES} | {OPERATOR, UPSTREAM}


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_a_services_policy_names_exactly_its_buckets(service: str) -> None:
    read, write = EXPECTED[service]
    policy = bucket_policy(bucket_access()[service])

    assert _resources(policy, "s3:ListBucket") == {f"arn:aws:s3:::{b}" for b in read | write}
    # Writing includes reading: a writer looks at what a key holds before it writes.
    assert _resources(policy, "s3:GetObject") == {f"arn:aws:s3:::{b}/*" for b in read | write}
    assert _resources(policy, "s3:PutObject") == {f"arn:aws:s3:::{b}/*" for b in write}
    every = {r for s in policy["Statement"] for r in s["Resource"]}
    assert {r.removeprefix("arn:aws:s3:::").removesuffix("/*") for r in every} == read | write


def test_no_user_may_make_buckets_or_administer() -> None:
    bucket_actions = {"s3:ListBucket", "s3:GetBucketLocation"}
    for entry in BUCKET_ACCESS:
        actions = {a for s in bucket_policy(entry)["Statement"] for a in s["Action"]}
        assert all(a.startswith("s3:") and "*" not in a for a in actions), entry.principal
        assert not {a for a in actions if "Bucket" in a} - bucket_actions, entry.principal


def test_only_the_claiming_services_delete_and_only_what_they_write() -> None:
    deleting = {
        entry.principal: _resources(bucket_policy(entry), "s3:DeleteObject")
        for entry in BUCKET_ACCESS
    }
    assert {name: found for name, found in deleting.items() if found} == {
        "validation": {"arn:aws:s3:::datasets/*"},
        "trainer": {"arn:aws:s3:::models/*"},
        "evaluator": {"arn:aws:s3:::models/*"},
    }
    for entry in BUCKET_ACCESS:
        assert entry.delete <= entry.write, entry.principal


def test_only_the_gateway_sets_a_retention() -> None:
    for entry in BUCKET_ACCESS:
        lifecycle = _resources(bucket_policy(entry), "s3:PutLifecycleConfiguration")
        expected = {"arn:aws:s3:::inspections"} if entry.principal == "gateway" else set()
        assert lifecycle == expected


def test_outside_principals_only_drop_files_and_the_operator_reads_everything() -> None:
    access = bucket_access()
    assert access[UPSTREAM].write == {Bucket.DROP}
    assert not access[UPSTREAM].read
    assert access[OPERATOR].read == set(Bucket)
    assert access[OPERATOR].write == {Bucket.DROP}


def test_every_bucket_is_written_by_someone_and_read_by_a_service() -> None:
    services = {s.name for s in SERVICES}
    for bucket in Bucket:
        assert any(bucket in e.write for e in BUCKET_ACCESS), bucket
        if bucket is not Bucket.DEAD_LETTERS:  # read back by the operator's `dlq replay`
            assert any(bucket in e.read for e in BUCKET_ACCESS if e.principal in services)


def test_the_dead_letter_bucket_is_the_settings_default() -> None:
    assert MinioSettings().dead_letter_bucket == Bucket.DEAD_LETTERS


def test_an_empty_access_gives_a_policy_without_statements() -> None:
    assert bucket_policy(BucketAccess("nobody"))["Statement"] == []
    assert policy_name("gateway") == "screwops-gateway"


def test_the_stack_generates_each_secret_once_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    first = minio_security.ensure_passwords(tmp_path)

    assert set(first) == {minio_security.ROOT, *bucket_access()}
    assert len(set(first.values())) == len(first)
    for name, secret in first.items():
        path = minio_secret_file(tmp_path, name)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(secret) >= 32
    assert minio_security.ensure_passwords(tmp_path) == first
    root = minio_security.root_settings(MinioSettings(), tmp_path)
    assert root.access_key == minio_security.ROOT
    assert root.secret_key is not None
    assert root.secret_key.get_secret_value() == first[minio_security.ROOT]
