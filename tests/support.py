"""Helpers shared by the test levels: waiting on a condition with a deadline, unique names, test
images, the registry's announcements, and MinIO clean-up."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import screwops_storage
from aiokafka import AIOKafkaConsumer
from minio import Minio
from PIL import Image
from screwops_contracts import (
    DatasetIngested,
    DatasetIngestedPayload,
    ModelDeployed,
    ModelDeployedPayload,
    ModelRolledBack,
    ModelRolledBackPayload,
)
from screwops_contracts.datasets import ImageLabel, Label, ManifestImage
from screwops_settings import (
    GrpcTlsSettings,
    MinioSettings,
    StackSettings,
    kafka_client_options,
)
from screwops_stack import certificates, minio_security
from screwops_stack.kafka_security import ADMIN

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def log_in_to_kafka_as_the_stack_admin() -> None:
    """Make the Kafka clients of this test session (and of the processes it starts) the stack's
    admin: the tests create topics and consumer groups of their own, which no principal of the
    catalogue may. The services the supervisor starts still log in as themselves, and the
    security tests name the principal they act as."""
    os.environ.setdefault("SCREWOPS_KAFKA__USERNAME", ADMIN)


def log_in_to_minio_as_the_stack_root() -> None:
    """Make the MinIO clients of this test session (and of the processes it starts) the stack's
    root: the tests make and remove objects in every bucket, which no user of the buckets'
    catalogue may. The services the supervisor starts still log in as themselves, and the
    security tests name the user they act as."""
    os.environ.setdefault("SCREWOPS_MINIO__ACCESS_KEY", minio_security.ROOT)


GRPC_TLS_VARIABLES = (
    "SCREWOPS_GRPC__CA_FILE",
    "SCREWOPS_GRPC__CERT_FILE",
    "SCREWOPS_GRPC__KEY_FILE",
)


def grpc_tls_home(home: Path) -> GrpcTlsSettings:
    """A CA and a gRPC server certificate of the stack's making under ``home`` (a test's own,
    so the unit tests need no stack): every server and client of the test listens and connects
    with them once :data:`GRPC_TLS_VARIABLES` name them."""
    log = home / "openssl.log"
    home.mkdir(parents=True, exist_ok=True)
    cert, key = certificates.ensure_grpc_certificate(home, log=log)
    return GrpcTlsSettings(ca_file=certificates.Ca(home).cert, cert_file=cert, key_file=key)


def use_grpc_tls(tls: GrpcTlsSettings) -> None:
    """Make ``tls`` this process's (and its children's) gRPC TLS settings."""
    files = (tls.ca_file, tls.cert_file, tls.key_file)
    os.environ.update(zip(GRPC_TLS_VARIABLES, map(str, files), strict=True))


def unique(prefix: str) -> str:
    """A name no other test uses, so tests never see each other's topics, buckets or data."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float, what: str, interval: float = 0.25
) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


def png(size: int = 32, *, shade: int = 128, seed: int = 0) -> bytes:
    """A small grayscale PNG whose bytes differ per (size, shade, seed): a test image."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(shade, 20, (size, size)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def screw_png(seed: int, *, size: int = 256) -> bytes:
    """A rendered good screw as a PNG: an image a served model finds a screw in."""
    from screwops_synth import render_screw

    out = io.BytesIO()
    render_screw(np.random.default_rng(seed), size=size, defect=None).save(out, format="PNG")
    return out.getvalue()


def manifest_image(sha256: str, defect_type: str | None = None) -> ManifestImage:
    """A manifest entry for the image ``sha256`` (a 64 px PNG at its content address)."""
    return ManifestImage(
        sha256=sha256,
        key=f"raw/{sha256[:2]}/{sha256}",
        filename=f"{sha256}.png",
        width=64,
        height=64,
        format="PNG",
        defect_type=defect_type,
    )


def image_label(sha256: str, label: Label, defect_type: str | None = None) -> ImageLabel:
    """A person's label for the image ``sha256``."""
    return ImageLabel(
        sha256=sha256,
        label=label,
        defect_type=defect_type,
        source="manual",
        labeled_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


# The frame size the unit tests' model events announce: the side of the gateway tests' images.
FRAME_SIZE = 64


def model_deployed(
    model: str,
    version: int,
    *,
    run_id: str | None = None,
    at: datetime | None = None,
    sequence: int | None = None,
    frame_size: int = FRAME_SIZE,
) -> ModelDeployed:
    """The registry's ``model.deployed``: ``version`` of ``model`` (served under its own name,
    taking frames of ``frame_size``) replaces the version before it (none for version 1), as the
    registry's move ``sequence`` (default: ``version``, one deployment per version); the run
    defaults to ``run-<version>``, the time to now."""
    event = ModelDeployed.origin(
        ModelDeployedPayload(
            model_name=model,
            version=version,
            previous_version=version - 1 or None,
            triton_model=model,
            run_id=run_id or f"run-{version}",
            frame_size=frame_size,
            sequence=version if sequence is None else sequence,
        ),
        producer="registry",
    )
    return event if at is None else event.model_copy(update={"occurred_at": at})


def model_rolled_back(
    model: str,
    from_version: int,
    to_version: int,
    *,
    at: datetime | None = None,
    sequence: int | None = None,
) -> ModelRolledBack:
    """The registry's ``model.rolled_back``: an operator moved ``model`` back, as the registry's
    move ``sequence`` (default: the one after ``from_version``'s deployment)."""
    event = ModelRolledBack.origin(
        ModelRolledBackPayload(
            model_name=model,
            from_version=from_version,
            to_version=to_version,
            triton_model=model,
            actor="ana",
            reason="false rejects",
            frame_size=FRAME_SIZE,
            sequence=from_version + 1 if sequence is None else sequence,
        ),
        producer="registry",
    )
    return event if at is None else event.model_copy(update={"occurred_at": at})


def minio_client(settings: MinioSettings) -> Minio:
    """A plain client of the configured MinIO, for what a test lists, drops or removes itself."""
    return screwops_storage.minio_client(settings)


def remove_objects(client: Minio, bucket: str, *prefixes: str) -> None:
    """Delete every object under each of ``prefixes`` in ``bucket`` (what a test staged)."""
    for prefix in prefixes:
        for item in client.list_objects(bucket, prefix=prefix, recursive=True):
            if item.object_name is not None:
                client.remove_object(bucket, item.object_name)


def free_port() -> int:
    """A local port nothing listens on now (bound, then released): for a server a test starts,
    or for a client that must find nothing there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def dataset_ingested(dataset: str) -> DatasetIngested:
    """Ingestion's ``dataset.ingested`` for version 1 of ``dataset``: 4 images labeled by layout."""
    return DatasetIngested.origin(
        DatasetIngestedPayload(
            dataset_id=dataset,
            version=1,
            manifest_key=f"{dataset}/v1/manifest.json",
            image_count=4,
            labeled_by_layout=4,
            refused_count=0,
            duplicate_count=0,
            source="upload",
        ),
        producer="it",
    )


async def records_of(
    settings: StackSettings, topic: str, count: int, *, within: float
) -> list[Any]:
    """The first ``count`` records of ``topic``, waiting up to ``within`` s for them."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:

        async def enough() -> list[Any] | None:
            batch = await consumer.getmany(timeout_ms=500)
            records.extend(r for rs in batch.values() for r in rs)
            return records if len(records) >= count else None

        await eventually(enough, within=within, what=f"{count} records on {topic}")
    finally:
        await consumer.stop()
    return records


async def run_cli(*args: str) -> tuple[int, str, str]:
    """The real ``screwops`` CLI in a subprocess: its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "screwops_cli",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def use_production_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production with credentials that are not the development defaults, so only the setting a
    test leaves out can make the settings refuse to load."""
    monkeypatch.setenv("SCREWOPS_ENVIRONMENT", "production")
    monkeypatch.setenv("SCREWOPS_MINIO__ACCESS_KEY", "line-7-ops")
    monkeypatch.setenv("SCREWOPS_MINIO__SECRET_KEY", "kJ8#real-minio-secret")
    monkeypatch.setenv("SCREWOPS_MONGO__URI", "mongodb://ops:m0ngo-pass@mongo:27017/")
    # Where an API's certificate and key would be mounted: production serves gRPC over TLS only.
    monkeypatch.setenv("SCREWOPS_GRPC__CERT_FILE", "/etc/screwops/grpc/tls.crt")
    monkeypatch.setenv("SCREWOPS_GRPC__KEY_FILE", "/etc/screwops/grpc/tls.key")
