"""The real gateway and registry, started as the supervisor starts them on the stack's
certificate (``make up`` issues it): a plaintext client is refused, a client trusting the stack's
CA is answered."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings

from tests.support import REPO, eventually, free_port


async def health(channel: grpc.aio.Channel) -> Any:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    return await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)


@pytest.fixture(params=["gateway", "registry"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The service's own process on free ports; yields its address once it answers."""
    name: str = request.param
    prefix, port = f"SCREWOPS_{name.upper()}_", free_port()
    env = os.environ | {f"{prefix}GRPC_PORT": str(port), f"{prefix}METRICS_PORT": str(free_port())}
    with (tmp_path / f"{name}.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"screwops_{name}", cwd=REPO, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    address = f"127.0.0.1:{port}"

    async def serving() -> bool | None:
        assert process.returncode is None, (tmp_path / f"{name}.log").read_text()[-3000:]
        async with open_aio_channel(address) as channel:
            try:
                answer = await health(channel)
            except grpc.aio.AioRpcError:
                return None
        return True if answer.status == health_pb2.HealthCheckResponse.SERVING else None

    try:
        await eventually(serving, within=120, what=f"{name} SERVING over TLS")
        yield address
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.timeout(300)
async def test_a_plaintext_client_is_refused_and_a_client_of_the_stacks_ca_answered(
    api: str,
) -> None:
    assert StackSettings().grpc.ca_file is not None, "make up issues the stack's CA"
    async with grpc.aio.insecure_channel(api) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health(plaintext)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    async with open_aio_channel(api) as channel:
        answer = await health(channel)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
