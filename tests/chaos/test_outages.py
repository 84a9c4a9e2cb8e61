"""Servers taken away mid-pipeline for 20 s and started again: Kafka in one run, MinIO and then
the MongoDB-wire server in another. The handlers caught in the outage retry with backoff; each
run still deploys exactly once, with no record pointing at a missing object."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from screwops_contracts import Topic
from screwops_settings import StackSettings

from tests.chaos.conftest import crash_server, restart_server
from tests.chaos.pipeline import OnEvent, deployed_once, run_pipeline
from tests.support import unique

OUTAGE_S = 20.0


def outage(taken: dict[Topic, str], seen: dict[str, float]) -> OnEvent:
    """An ``on_event`` that kills ``taken[topic]`` when the run's topic appears, keeps it down
    ``OUTAGE_S`` and starts it again, noting how long each was away."""
    settings = StackSettings()

    async def on_event(topic: Topic) -> None:
        server = taken.get(topic)
        if server is None:
            return
        died = crash_server(settings, server)
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(restart_server, server)
        seen[server] = time.monotonic() - died

    return on_event


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(1500)
@pytest.mark.parametrize(
    "taken",
    [
        pytest.param({Topic.DATASET_LABELED: "kafka"}, id="kafka"),
        pytest.param(
            {Topic.DATASET_LABELED: "minio", Topic.MODEL_TRAINED: "ferretdb"}, id="storage"
        ),
    ],
)
async def test_a_server_away_for_20s_mid_pipeline(tmp_path: Path, taken: dict[Topic, str]) -> None:
    away: dict[str, float] = {}
    run = await run_pipeline(tmp_path, unique("chaos-outage"), outage(taken, away))
    outcome = await deployed_once(run)
    print(
        f"run {run.correlation_id}: deployed as version {outcome['version']} in "
        f"{run.seconds:.0f}s with "
        + ", ".join(f"{name} away {s:.1f}s" for name, s in away.items())
        + f"; redelivered {run.redelivered or 'none'}"
    )
    assert set(away) == set(taken.values())
