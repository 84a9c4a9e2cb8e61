"""Security on real processes: every service refuses to start in production with the
development credentials and says which settings without printing a secret; every gRPC API (the
gateway's inspections and the admin APIs of ingestion, labeling and the registry) started with
tokens refuses calls without a valid one while health checking stays open, and never logs a
token."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
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
from screwops_contracts.models import MODEL_NAME
from screwops_rpc import open_aio_channel
from screwops_settings import MinioSettings

from tests.e2e.conftest import PIPELINE, REPO
from tests.support import eventually, free_port, png, run_cli

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
            "SCREWOPS_MONGO__URI": f"mongodb://screwops:{password}@127.0.0.1:27017/",
        },
        log,
    )
    code = await asyncio.wait_for(process.wait(), timeout=240)

    output = log.read_text(errors="replace")
    assert code != 0, f"{service} started in production with the development credentials"
    assert "minio.secret_key (SCREWOPS_MINIO__SECRET_KEY)" in output
    assert "mongo.uri" not in output.split("production refuses")[-1], "the URI has a user"
    development = MinioSettings()
    for secret in (password, development.secret_key.get_secret_value()):
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
