"""Triton killed under load: the gateway answers UNAVAILABLE at once while it is gone, no request
outlives its deadline, and serving comes back on its own once Triton is restarted (the registry
notices the empty Triton and restores production)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings

from tests.chaos.conftest import crash_server, restart_server
from tests.e2e.runs import GATEWAY, finished_run
from tests.support import eventually, screw_png

CLIENTS = 4
DEADLINE_S = 5.0
# What a request may take past its deadline before it counts as hanging.
SLACK_S = 0.5
OUTAGE_S = 10.0
RECOVERY_S = 120.0


@dataclass(frozen=True)
class Call:
    began: float
    ended: float
    status: grpc.StatusCode

    @property
    def seconds(self) -> float:
        return self.ended - self.began


class Load:
    """``CLIENTS`` closed-loop clients inspecting the production model until stopped."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub
        self._stopping = asyncio.Event()
        self.calls: list[Call] = []
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(CLIENTS)]

    async def _client(self, index: int) -> None:
        request = inspection_pb2.InspectRequest(
            image=screw_png(index), line_id="line-chaos", camera_id=f"cam-{index}"
        )
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                await self._stub.Inspect(request, timeout=DEADLINE_S)
                status = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                status = error.code()
            self.calls.append(Call(began, time.monotonic(), status))
            if status is not grpc.StatusCode.OK:
                await asyncio.sleep(0.05)  # a camera retries, but not in a hot loop

    async def answered_since(self, moment: float) -> Call | None:
        return next(
            (c for c in self.calls if c.began > moment and c.status is grpc.StatusCode.OK), None
        )

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks)


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(1200)  # a pipeline run of its own when no other test made one: minutes
async def test_triton_killed_under_load(tmp_path: Path) -> None:
    settings = StackSettings()
    await finished_run(settings, tmp_path)  # a production version for the gateway to serve
    async with open_aio_channel(GATEWAY) as channel:
        load = Load(inspection_pb2_grpc.InspectionServiceStub(channel))
        try:
            began = time.monotonic()
            await eventually(
                lambda: load.answered_since(began),
                within=60,
                what="the gateway answering before the crash",
            )
            died = crash_server(settings, "triton")
            await asyncio.sleep(OUTAGE_S)  # the outage the clients live through
            restarting = time.monotonic()
            await asyncio.to_thread(restart_server, "triton")
            restarted = time.monotonic()
            back = await eventually(
                lambda: load.answered_since(restarted),
                within=RECOVERY_S,
                what="the gateway answering again after Triton's restart",
            )
        finally:
            await load.stop()

    # Triton gone: nothing listens on its port, so every call can be refused at once.
    down = [c for c in load.calls if died <= c.began and c.ended <= restarting]
    # Triton starting, then loading production: refused within the gateway's Triton budget.
    during = [c for c in load.calls if died <= c.began and c.ended <= back.began]
    statuses = {c.status for c in load.calls}
    hung = [c for c in load.calls if c.seconds > DEADLINE_S + SLACK_S]
    print(
        f"Triton killed, restarted after {restarting - died:.1f}s, up {restarted - died:.1f}s "
        f"after the kill; {len(load.calls)} calls, {len(down)} while it was gone (slowest "
        f"{max(c.seconds for c in down):.3f}s), {len(during)} before serving resumed (slowest "
        f"{max(c.seconds for c in during):.3f}s); answering again {back.ended - restarted:.1f}s "
        f"after the restart; statuses {sorted(s.name for s in statuses)}"
    )
    assert down, "no request was made while Triton was down"
    assert {c.status for c in during} == {grpc.StatusCode.UNAVAILABLE}
    assert max(c.seconds for c in down) < 1.0, "UNAVAILABLE came slowly while Triton was gone"
    assert not hung, f"{len(hung)} requests outlived their deadline"
    assert statuses <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
