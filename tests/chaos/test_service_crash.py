"""Every consuming service is killed (SIGKILL) while the stage of a running pipeline that it owns
is under way, and restarted by the supervisor: the run still ends deployed, with exactly one
dataset version, training run, model version and deployment, and the gateway serves it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from screwops_contracts import Topic
from screwops_contracts.runs import RUNS
from screwops_settings import StackSettings
from screwops_storage import database

from tests.chaos.conftest import crash_service
from tests.chaos.pipeline import RUN_WITHIN_S, deployed_once, run_pipeline
from tests.support import eventually, unique

# The event each service consumes; it is killed as soon as the run's event appears, so the kill
# lands before, while or just after it handles it. The trainer, whose stage is long, is killed
# only once its run has finished an epoch: in the middle of training.
KILLED_ON = {
    Topic.DATASET_INGESTED: ("labeling",),
    Topic.DATASET_LABELED: ("validation",),
    Topic.MODEL_TRAINED: ("evaluator",),
    Topic.MODEL_APPROVED: ("registry",),
    Topic.MODEL_DEPLOYED: ("gateway", "monitor"),
}


async def kill_mid_training(settings: StackSettings, dataset: str) -> float:
    """Wait for the run on ``dataset`` to finish its first epoch, then kill the trainer; when it
    died on the ``time.monotonic()`` clock."""
    db = database(settings.mongo, appname="chaos")
    try:

        async def training() -> dict[str, Any] | None:
            run = await db[RUNS].find_one({"dataset_id": dataset, "status": "running"})
            return run if run is not None and run.get("epochs") else None

        await eventually(training, within=RUN_WITHIN_S, what=f"a run on {dataset} training")
        crash_service(settings, "trainer")
        return time.monotonic()
    finally:
        db.client.close()


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(1500)
async def test_each_service_killed_mid_stage(tmp_path: Path) -> None:
    settings = StackSettings()
    dataset = unique("chaos-crash")
    killed: dict[str, float] = {}
    began = time.monotonic()
    trainer = asyncio.create_task(kill_mid_training(settings, dataset))

    async def kill(topic: Topic) -> None:
        for name in KILLED_ON.get(topic, ()):
            crash_service(settings, name)
            killed[name] = time.monotonic() - began

    try:
        run = await run_pipeline(tmp_path, dataset, kill)
    finally:
        if not trainer.done():
            trainer.cancel()
    killed["trainer"] = await trainer - began
    outcome = await deployed_once(run)

    print(
        f"run {run.correlation_id}: deployed as version {outcome['version']} in "
        f"{run.seconds:.0f}s; killed "
        + ", ".join(f"{n} at {at:.1f}s" for n, at in sorted(killed.items(), key=lambda i: i[1]))
        + f"; training attempts {outcome['attempts']}; redelivered {run.redelivered or 'none'}"
    )
    assert set(killed) == {"trainer", *(name for names in KILLED_ON.values() for name in names)}
    assert outcome["attempts"] >= 2, "the trainer was killed mid-run, so the run started again"
