"""Drift-triggered retraining end to end, on the real stack and the supervised services.

The line's light changes (``screwops_synth``'s ``Style.shifted``: the hall three times as bright
and unevenly lit) and the production model's scores with it. The pictures go through the gateway,
which keeps each image (``E2E_ENV`` samples every one) and logs the inspection; labeling queues them
for review and a reviewer gives the first ones their true labels; the monitor sees the scores
drift from the model's evaluation baseline (and the reviews' accuracy fall) and asks for a new
model; labeling hands the reviewed images to the production model's dataset through the drop
bucket; ingestion cuts a new version; and it is validated, trained on, evaluated and deployed.
The gateway then serves the new version.

That a normal stream raises nothing is the monitor's integration test (``test_monitor.py``): on
this stack the production model's windows hold whatever the other scenarios sent.
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from screwops.v1 import (
    ingestion_pb2,
    inspection_pb2,
    inspection_pb2_grpc,
    labeling_pb2,
    labeling_pb2_grpc,
)
from screwops_contracts import (
    DatasetIngested,
    Event,
    ModelDegraded,
    ModelDeployed,
    ModelTrained,
    Topic,
    TrainingRequested,
    parse_event,
)
from screwops_settings import StackSettings
from screwops_synth import DEFECT_TYPES, Style, render_screw

from tests.e2e.conftest import screwops
from tests.e2e.runs import GATEWAY, finished_run
from tests.support import eventually, unique

LABELING = "127.0.0.1:50053"
SHIFT = 2.0
REVIEWED = 30
"""Shifted inspections a reviewer labels before the rest arrive: fewer than the monitor's
``min_observations`` in ``E2E_ENV``, so the scores alone do not alarm before they are reviewed."""
UNREVIEWED = 60
"""Shifted inspections after the reviews: together they fill the monitor's window past
``min_observations``."""
E = TypeVar("E", bound=Event[Any])
FOLLOWED = (
    Topic.MODEL_DEGRADED,
    Topic.TRAINING_REQUESTED,
    Topic.DATASET_INGESTED,
    Topic.MODEL_TRAINED,
    Topic.MODEL_DEPLOYED,
)


class Stream:
    """The events of the followed topics from their beginning, parsed, as they arrive."""

    def __init__(self, settings: StackSettings) -> None:
        self._consumer = AIOKafkaConsumer(
            *FOLLOWED,
            bootstrap_servers=settings.kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.events: list[Event[Any]] = []

    async def __aenter__(self) -> Stream:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def first(
        self, kind: type[E], matches: Callable[[E], bool], *, within: float, what: str
    ) -> E:
        """The first event of ``kind`` that ``matches``, waiting up to ``within`` s for it."""

        async def found() -> E | None:
            batch = await self._consumer.getmany(timeout_ms=500)
            for record in (r for records in batch.values() for r in records):
                event = parse_event(record.topic, record.value)
                if event is not None:
                    self.events.append(event)
            return next((e for e in self.events if isinstance(e, kind) and matches(e)), None)

        return await eventually(found, within=within, what=what)


def shifted_screws(count: int) -> list[tuple[bytes, bool]]:
    """``count`` new screws under the shifted light, every other one defective, as PNG bytes."""
    seed, style = secrets.randbelow(1 << 30), Style().shifted(SHIFT)
    screws = []
    for i in range(count):
        defect = DEFECT_TYPES[(i // 2) % len(DEFECT_TYPES)] if i % 2 else None
        picture = render_screw(
            np.random.default_rng([seed, i]), size=256, defect=defect, style=style
        )
        out = io.BytesIO()
        picture.save(out, format="PNG")
        screws.append((out.getvalue(), defect is not None))
    return screws


async def inspect_all(
    gateway: Any, screws: list[tuple[bytes, bool]], line: str, version: int
) -> dict[str, bool]:
    """Each screw through the gateway as the line sends it (no version pinned); the inspection
    ids with whether the screw is really defective."""
    truth = {}
    for image, defective in screws:
        response = await gateway.Inspect(
            inspection_pb2.InspectRequest(
                image=image, line_id=line, camera_id="cam-1", request_id=unique("e2e-drift")
            ),
            timeout=30,
        )
        assert response.model_version == version, "production moved during the scenario"
        truth[response.inspection_id] = defective
    return truth


@pytest.mark.timeout(1800)  # maybe a run of its own first, then a whole retraining: minutes
@pytest.mark.usefixtures("services")
async def test_a_shifted_stream_leads_to_a_retrained_and_deployed_version(tmp_path: Any) -> None:
    settings = StackSettings()
    production = (await finished_run(settings, tmp_path)).deployed.payload
    lineage = screwops("models", "show", str(production.version))
    dataset, trained_on = lineage["dataset_id"], int(lineage["dataset_version"])
    line = unique("line-drift")
    began = time.monotonic()

    async with (
        grpc.aio.insecure_channel(GATEWAY) as gateway_channel,
        grpc.aio.insecure_channel(LABELING) as labeling_channel,
        Stream(settings) as stream,
    ):
        gateway: Any = inspection_pb2_grpc.InspectionServiceStub(gateway_channel)
        labeling: Any = labeling_pb2_grpc.LabelingServiceStub(labeling_channel)
        screws = shifted_screws(REVIEWED + UNREVIEWED)

        truth = await inspect_all(gateway, screws[:REVIEWED], line, production.version)

        async def queued() -> bool | None:
            page = await labeling.ListReviewQueue(
                labeling_pb2.ListReviewQueueRequest(line_id=line), timeout=30
            )
            return True if page.total_size == REVIEWED else None

        await eventually(queued, within=120, what=f"{REVIEWED} inspections queued for review")
        for inspection_id, defective in truth.items():
            await labeling.SubmitReview(
                labeling_pb2.SubmitReviewRequest(
                    inspection_id=inspection_id,
                    label=ingestion_pb2.LABEL_BAD if defective else ingestion_pb2.LABEL_GOOD,
                    reviewer="e2e",
                ),
                timeout=30,
            )
        await inspect_all(gateway, screws[REVIEWED:], line, production.version)

        degraded = await stream.first(
            ModelDegraded,
            lambda e: (
                e.payload.model_version == production.version
                and e.payload.signal in ("score_drift", "defect_rate")
            ),
            within=120,
            what=f"model.degraded of version {production.version} by the scores",
        )
        requested = await stream.first(
            TrainingRequested,
            lambda e: (
                e.payload.dataset_id == dataset
                and f"version {production.version}:" in e.payload.reason
            ),
            within=60,
            what=f"training.requested on {dataset}",
        )
        added = await stream.first(
            DatasetIngested,
            lambda e: e.payload.dataset_id == dataset and e.payload.version > trained_on,
            within=120,
            what=f"a new version of {dataset} from the reviewed inspections",
        )
        deployed = await stream.first(
            ModelDeployed,
            lambda e: e.payload.version > production.version,
            within=900,
            what="a newly deployed version",
        )
        trained = await stream.first(
            ModelTrained,
            lambda e: e.payload.run_id == deployed.payload.run_id,
            within=60,
            what=f"model.trained of run {deployed.payload.run_id}",
        )
        print(
            f"{degraded.payload.signal} {degraded.payload.value:.3f} past "
            f"{degraded.payload.threshold:.3f}; asked: {requested.payload.reason}; "
            f"{dataset} v{added.payload.version} with {added.payload.image_count} images; "
            f"version {deployed.payload.version} deployed "
            f"{time.monotonic() - began:.0f}s after the first shifted screw"
        )

        assert added.payload.source == "bucket"
        previous = screwops("datasets", "show", dataset, "--version", str(trained_on))
        assert added.payload.image_count == int(previous["image_count"]) + REVIEWED
        assert (trained.payload.dataset_id, trained.payload.dataset_version) == (
            dataset,
            added.payload.version,
        )
        assert not trained.payload.reused

        async def served() -> bool | None:
            image, _ = screws[0]
            response = await gateway.Inspect(
                inspection_pb2.InspectRequest(
                    image=image, line_id=line, camera_id="cam-1", request_id=unique("e2e-drift")
                ),
                timeout=30,
            )
            return True if response.model_version == deployed.payload.version else None

        await eventually(served, within=180, what=f"the gateway serving {deployed.payload.version}")
