"""Security on real processes: every service refuses to start in production with the
development credentials and says which settings without printing a secret; a gateway with tokens
refuses calls without a valid one while health checking stays open, and never logs a token."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_settings import MinioSettings

from tests.e2e.conftest import PIPELINE, REPO
from tests.support import eventually, free_port, png

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


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(300)
async def test_a_gateway_with_tokens_refuses_calls_without_a_valid_one(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    port = free_port()
    log = tmp_path / "gateway.log"
    process = await start(
        "screwops_gateway",
        {
            "SCREWOPS_GATEWAY_SERVICE_NAME": "gateway-security",
            "SCREWOPS_GATEWAY_GRPC_PORT": str(port),
            "SCREWOPS_GATEWAY_METRICS_PORT": str(free_port()),
            "SCREWOPS_GATEWAY_AUTH_TOKENS": json.dumps([token]),
        },
        log,
    )
    refused: dict[str, str] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            gateway: Any = inspection_pb2_grpc.InspectionServiceStub(channel)

            async def serving() -> bool | None:
                try:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                except grpc.aio.AioRpcError:
                    return None
                return True if answer.status == health_pb2.HealthCheckResponse.SERVING else None

            await eventually(serving, within=120, what="the gateway SERVING, asked without a token")
            request = inspection_pb2.InspectRequest(image=png(64), line_id="l", camera_id="c")
            for name, metadata in (
                ("no token", ()),
                ("wrong token", (("authorization", f"Bearer {secrets.token_urlsafe(24)}"),)),
                ("not bearer", (("authorization", f"Basic {token}"),)),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await gateway.Inspect(request, metadata=metadata, timeout=10)
                assert failure.value.code() is grpc.StatusCode.UNAUTHENTICATED, name
                refused[name] = str(failure.value.details())
            passed = grpc.StatusCode.OK
            try:
                await gateway.Inspect(
                    request, metadata=(("authorization", f"Bearer {token}"),), timeout=10
                )
            except grpc.aio.AioRpcError as error:  # past authentication, whatever the model says
                passed = error.code()
            assert passed is not grpc.StatusCode.UNAUTHENTICATED
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=60)
    assert token not in log.read_text(errors="replace")
    print(f"refused: {refused}")
