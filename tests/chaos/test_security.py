"""Security on real processes: every service refuses to start in production with the
development credentials and says which settings without printing a secret; every gRPC API (the
gateway's inspections and the admin APIs of ingestion, labeling and the registry) started with
tokens refuses calls without a valid one while health checking stays open, and never logs a
token; Triton refuses to load or unload a model for anyone without the model-control key (the
gateway) and does for the registry's client; each service's MinIO user opens its own buckets
and no other, and the development root no longer logs in; and, after all that, no secret of the
stack home is in any of its logs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc.aio as tritongrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from minio import Minio
from minio.error import S3Error
from pydantic import SecretStr
from screwops.v1 import (
    ingestion_pb2,
    ingestion_pb2_grpc,
    inspection_pb2,
    inspection_pb2_grpc,
    labeling_pb2,
    labeling_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from screwops_cli.common import ExitCode
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import MODEL_CONTROL_HEADER, MODEL_NAME
from screwops_errors import PermissionDeniedError
from screwops_rpc import open_aio_channel
from screwops_serving import TritonModels
from screwops_settings import (
    DEVELOPMENT_MINIO_SECRET,
    StackSettings,
    minio_secret_file,
    triton_model_control_key,
    triton_model_repository,
)
from screwops_stack import minio_security
from screwops_storage import ObjectStore

from tests.e2e.conftest import PIPELINE, REPO
from tests.integration.test_triton import CONFIG, MODEL
from tests.support import eventually, free_port, minio_client, png, remove_objects, run_cli, unique

SERVICES = (*PIPELINE, "console")


async def start(module: str, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            cwd=REPO,
            env=os.environ | env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("service", SERVICES)
async def test_production_refuses_development_credentials_without_printing_a_secret(
    service: str, tmp_path: Path
) -> None:
    # A real, non-default secret beside the development ones: neither may reach the output.
    password = f"pw-{secrets.token_hex(8)}"
    log = tmp_path / f"{service}.log"
    process = await start(
        f"screwops_{service}",
        {
            "SCREWOPS_ENVIRONMENT": "production",
            "SCREWOPS_MINIO__SECRET_KEY": DEVELOPMENT_MINIO_SECRET,
            "SCREWOPS_MONGO__URI": f"mongodb://screwops:{password}@127.0.0.1:27017/",
        },
        log,
    )
    code = await asyncio.wait_for(process.wait(), timeout=240)

    output = log.read_text(errors="replace")
    assert code != 0, f"{service} started in production with the development credentials"
    assert "minio.secret_key (SCREWOPS_MINIO__SECRET_KEY)" in output
    assert "mongo.uri" not in output.split("production refuses")[-1], "the URI has a user"
    for secret in (password, DEVELOPMENT_MINIO_SECRET):
        assert secret not in output


@dataclass(frozen=True)
class Api:
    """A service's API as a caller sees it: a call an admin would make to change something, and
    a harmless read, each a (method name, request); and a CLI command calling it."""

    stub: Callable[[grpc.aio.Channel], Any]
    change: tuple[str, Any]
    read: tuple[str, Any]
    command: tuple[str, ...]


INSPECTION = inspection_pb2.InspectRequest(image=png(64), line_id="l", camera_id="c")
IMAGE = "{image}"  # the inspect command's argument, written per test
APIS = {
    "gateway": Api(
        inspection_pb2_grpc.InspectionServiceStub,
        ("Inspect", INSPECTION),
        ("Inspect", INSPECTION),
        ("inspect", IMAGE),
    ),
    "ingestion": Api(
        ingestion_pb2_grpc.IngestionServiceStub,
        ("Import", ingestion_pb2.ImportRequest(path="/nonexistent", dataset_id="security-probe")),
        ("ListDatasets", ingestion_pb2.ListDatasetsRequest()),
        ("datasets", "list"),
    ),
    "labeling": Api(
        labeling_pb2_grpc.LabelingServiceStub,
        ("CloseVersion", labeling_pb2.CloseVersionRequest(dataset_id="security-probe")),
        ("ListReviewQueue", labeling_pb2.ListReviewQueueRequest()),
        ("label", "review", "list"),
    ),
    "registry": Api(
        registry_pb2_grpc.RegistryServiceStub,
        ("Promote", registry_pb2.PromoteRequest(model_name=MODEL_NAME, version=999_999)),
        ("ListVersions", registry_pb2.ListVersionsRequest(model_name=MODEL_NAME)),
        ("models", "list"),
    ),
}


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("service", sorted(APIS))
async def test_an_api_with_tokens_refuses_calls_without_a_valid_one(
    service: str, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(24)
    port = free_port()
    prefix = f"SCREWOPS_{service.upper()}_"
    log = tmp_path / f"{service}.log"
    # A second replica of the supervised service: it joins that service's consumer groups and
    # shares their partitions. A service name of its own would make new groups, which start at
    # the beginning of every topic and would re-run the whole history of the pipeline (the
    # registry re-announcing every deployment ever made, for example).
    process = await start(
        f"screwops_{service}",
        {
            f"{prefix}GRPC_PORT": str(port),
            f"{prefix}METRICS_PORT": str(free_port()),
            f"{prefix}AUTH_TOKENS": json.dumps(
                [{"principal": "chaos-admin", "role": "admin", "token": token}]
            ),
        },
        log,
    )
    api = APIS[service]
    refused: dict[str, str] = {}
    try:
        async with open_aio_channel(f"127.0.0.1:{port}") as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)

            async def serving() -> bool | None:
                try:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                except grpc.aio.AioRpcError:
                    return None
                return True if answer.status == health_pb2.HealthCheckResponse.SERVING else None

            await eventually(serving, within=120, what=f"{service} SERVING, asked without a token")
            stub = api.stub(channel)
            for name, metadata in (
                ("no token", ()),
                ("wrong token", (("authorization", f"Bearer {secrets.token_urlsafe(24)}"),)),
                ("not bearer", (("authorization", f"Basic {token}"),)),
            ):
                for method, request in (api.change, api.read):
                    with pytest.raises(grpc.aio.AioRpcError) as failure:
                        await getattr(stub, method)(request, metadata=metadata, timeout=10)
                    assert failure.value.code() is grpc.StatusCode.UNAUTHENTICATED, name
                refused[name] = str(failure.value.details())
        async with open_aio_channel(f"127.0.0.1:{port}", token) as channel:
            passed = grpc.StatusCode.OK
            try:
                method, request = api.read
                await getattr(api.stub(channel), method)(request, timeout=10)
            except grpc.aio.AioRpcError as error:  # past authentication, whatever it answers
                passed = error.code()
            assert passed is not grpc.StatusCode.UNAUTHENTICATED
        image = tmp_path / "screw.png"
        image.write_bytes(INSPECTION.image)
        command = [part.replace(IMAGE, str(image)) for part in api.command]
        address = ("--address", f"127.0.0.1:{port}", "--json")
        denied, _, complaint = await run_cli(*command, *address)
        allowed, _, _ = await run_cli(*command, *address, "--token", token)
        assert denied == ExitCode.DENIED, complaint
        # Past authentication, whatever the service answers (a gateway may have no model yet).
        assert allowed != ExitCode.DENIED
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=60)
    assert token not in log.read_text(errors="replace")
    print(
        f"{service} refused: {refused}; with the token: {passed.name}; "
        f"CLI exit codes without/with the token: {denied}/{allowed}"
    )


@pytest.mark.timeout(300)
async def test_only_the_key_holders_may_load_or_unload_a_triton_model() -> None:
    settings = StackSettings()
    key = triton_model_control_key(settings)
    assert key, "the stack home has no Triton model-control key: run make up"
    name = unique("model_control").replace("-", "_")
    directory = triton_model_repository(settings.home) / name
    (directory / "1").mkdir(parents=True)
    (directory / "config.pbtxt").write_text(CONFIG.format(name=name))
    (directory / "1" / "model.py").write_text(MODEL)
    # As the gateway builds its client (no key), one with a guessed key, and the registry's.
    gateway = TritonModels(settings.triton.grpc_url)
    guesser = TritonModels(settings.triton.grpc_url, model_control_key=secrets.token_urlsafe(32))
    registry = TritonModels(settings.triton.grpc_url, model_control_key=key)
    http = f"http://{settings.triton.http_url}/v2/repository"
    try:
        for client in (gateway, guesser):
            with pytest.raises(PermissionDeniedError):
                await client.load(name)
        async with httpx.AsyncClient(timeout=30) as web:
            answer = await web.post(f"{http}/models/{name}/load")
            assert answer.status_code >= 400, answer.text
            assert "restricted" in answer.text
        assert not await gateway.ready(name)
        await registry.load(name)
        # Inference, health and metadata stay open to the gateway.
        assert await gateway.ready(name, 1)
        raw = tritongrpc.InferenceServerClient(settings.triton.grpc_url)
        try:
            assert (await raw.get_model_metadata(name, as_json=True))["name"] == name
        finally:
            await raw.close()
        for client in (gateway, guesser):
            with pytest.raises(PermissionDeniedError):
                await client.unload(name)
            with pytest.raises(PermissionDeniedError):
                await client.served()
        async with httpx.AsyncClient(timeout=30) as web:
            refused = await web.post(f"{http}/models/{name}/unload")
            assert refused.status_code >= 400, refused.text
            allowed = await web.post(f"{http}/index", headers={MODEL_CONTROL_HEADER: key}, json={})
            assert allowed.status_code == 200, allowed.text
        assert await gateway.ready(name, 1), "a refused unload unloaded the model"
        assert await registry.loaded_versions(name) == [1]
        await registry.unload(name)
        assert not await gateway.ready(name)
    finally:
        for client in (gateway, guesser, registry):
            await client.close()
        shutil.rmtree(directory)
    print("Triton refused model control without the key (gRPC and HTTP); the key holder loaded")


def _minio_user(settings: StackSettings, principal: str) -> ObjectStore:
    """The object store a service builds, logged in as ``principal`` with its stack secret."""
    secret = minio_secret_file(settings.home, principal).read_text().strip()
    return ObjectStore.from_settings(
        settings.minio.model_copy(update={"access_key": principal, "secret_key": SecretStr(secret)})
    )


@pytest.mark.timeout(120)
async def test_a_services_minio_user_opens_its_own_buckets_and_no_other() -> None:
    settings = StackSettings()
    root = ObjectStore.from_settings(minio_security.root_settings(settings.minio, settings.home))
    gateway, trainer = _minio_user(settings, "gateway"), _minio_user(settings, "trainer")
    prefix = unique("minio-users")
    written = []
    try:
        # Its own: the gateway keeps an inspection image, the trainer a model file.
        written.append(await gateway.put_named(Bucket.INSPECTIONS, f"{prefix}/a", b"image"))
        assert await gateway.get_verified(Bucket.INSPECTIONS, f"{prefix}/a") == b"image"
        written.append(await trainer.put_named(Bucket.MODELS, f"{prefix}/m", b"model"))
        assert await trainer.list_keys(Bucket.MODELS, prefix) == [f"{prefix}/m"]
        # Another's: MinIO answers AccessDenied to reads, lists and writes alike.
        refused = [
            gateway.get_verified(Bucket.MODELS, f"{prefix}/m"),
            gateway.put_named(Bucket.MODELS, f"{prefix}/forged", b"x"),
            gateway.list_keys(Bucket.DATASETS, prefix),
            trainer.get_verified(Bucket.INSPECTIONS, f"{prefix}/a"),
            trainer.put_named(Bucket.DATASETS, f"{prefix}/forged", b"x"),
            trainer.ensure_buckets(unique("minio-users-bucket")),
        ]
        for call in refused:
            with pytest.raises(PermissionDeniedError):
                await call
        assert not await root.exists(Bucket.MODELS, f"{prefix}/forged")
        assert not await root.exists(Bucket.DATASETS, f"{prefix}/forged")
    finally:
        s3 = minio_client(minio_security.root_settings(settings.minio, settings.home))
        for bucket in (Bucket.INSPECTIONS, Bucket.MODELS):
            await asyncio.to_thread(remove_objects, s3, bucket, f"{prefix}/")
    print(f"gateway and trainer wrote their own buckets ({len(written)} objects), were denied 6")


async def test_the_development_minio_root_no_longer_logs_in() -> None:
    settings = StackSettings()
    development = Minio(
        settings.minio.endpoint,
        access_key=minio_security.DEVELOPMENT_ROOT,
        secret_key=DEVELOPMENT_MINIO_SECRET,
        secure=settings.minio.secure,
    )
    with pytest.raises(S3Error) as refused:
        await asyncio.to_thread(development.list_buckets)
    assert refused.value.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch")
    root = minio_client(minio_security.root_settings(settings.minio, settings.home))
    assert {b.name for b in await asyncio.to_thread(root.list_buckets)} >= set(Bucket)


MIN_SECRET_CHARS = 16
"""Shorter lines of a secret file are no secret (and would match by chance)."""


def _stack_secrets(home: Path) -> dict[str, str]:
    """{where: secret} for every secret the stack home keeps: Kafka's passwords, the console's
    admin password and session secret, Triton's model-control key, and whatever else lands in
    ``secrets/`` (API tokens)."""
    found = {}
    for path in sorted((home / "secrets").rglob("*")):
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if len(line.strip()) >= MIN_SECRET_CHARS:
                found[f"{path.relative_to(home)}:{number}"] = line.strip()
    return found


@pytest.mark.usefixtures("services")
async def test_no_secret_of_the_stack_home_is_in_any_log() -> None:
    """Last in the suite: after its services, pipeline calls and refusals have all logged."""
    home = StackSettings().home
    found = _stack_secrets(home)
    assert any(where.startswith("secrets/kafka/") for where in found), sorted(found)
    assert any(where.startswith("secrets/minio/") for where in found), sorted(found)
    assert any(where.startswith("secrets/triton/") for where in found), sorted(found)
    anywhere = re.compile("|".join(re.escape(secret) for secret in found.values()))
    which = {secret: where for where, secret in found.items()}
    leaks = []
    logs = sorted(p for p in (home / "logs").rglob("*") if p.is_file())
    for log in logs:
        with log.open(errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                for match in anywhere.finditer(line):
                    # Where, and whose secret, never the secret itself.
                    leaks.append(f"{log.relative_to(home)}:{number} holds {which[match[0]]}")
    assert not leaks, "secrets in the logs:\n" + "\n".join(leaks)
    print(f"{len(found)} secrets, none in {len(logs)} logs under {home / 'logs'}")
