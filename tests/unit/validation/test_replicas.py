"""Fenced claims of one version's validation: a second delivery (a rebalance) waits while a live
attempt holds the claim; one taken over from a stalled attempt completes, and the stalled
attempt's late result is refused, discarded and counted, its objects left for the sweep."""

from __future__ import annotations

import asyncio
from typing import cast

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from screwops_contracts import DatasetValidated
from screwops_contracts.datasets import Bucket, Split
from screwops_storage import ClaimTimes
from screwops_validation.config import Rules
from screwops_validation.report import ValidationReport
from screwops_validation.service import ValidationService, report_keys
from screwops_validation.store import ValidationStore

from tests.fakes import FakeObjects, HeldStore, RecordingBus
from tests.support import eventually
from tests.unit.validation.builders import balanced, stage_version
from tests.unit.validation.fakes import FakeStore

HEARTBEAT_S = 0.01


def replica(
    store: ValidationStore, objects: FakeObjects, reader: InMemoryMetricReader | None = None
) -> tuple[ValidationService, RecordingBus]:
    emitted = RecordingBus("validation")
    rules = Rules(concurrency=4, claims=ClaimTimes(max_run_s=60, heartbeat_s=HEARTBEAT_S))
    meters = MeterProvider(metric_readers=[reader]) if reader else None
    service = ValidationService(store, objects, emitted.emit, rules=rules, meter_provider=meters)
    return service, emitted


def lost(reader: InMemoryMetricReader) -> float:
    """``screwops_attempts_lost`` as exported."""
    data = reader.get_metrics_data()
    assert data is not None
    return sum(
        point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "screwops_attempts_lost"
        for point in metric.data.data_points
        if isinstance(point, NumberDataPoint)
    )


async def test_an_attempt_taken_over_while_stalled_has_its_late_result_refused() -> None:
    """The first replica stalls before completing v2 (past its run limit, the fake's claims
    treating it as abandoned); the second takes v2 over as attempt 2, with the split inherited
    from v1, and completes it. The first's completion is then refused: it announces nothing and
    its attempt's files stay unreferenced."""
    store, objects = FakeStore(), FakeObjects()
    first_files = balanced(22)
    v1 = await stage_version(objects, "screws", first_files)
    v2 = await stage_version(objects, "screws", [*first_files, *balanced(8, offset=300)], version=2)
    held = HeldStore(store, "complete_report")
    reader = InMemoryMetricReader()
    first, first_said = replica(cast(ValidationStore, held), objects, reader)
    second, second_said = replica(store, objects)

    # The first replica judges v2 before v1 is validated, so it inherits no split; the second,
    # handed v2 after v1 was validated, inherits v1's.
    slow = asyncio.create_task(first.on_dataset_labeled(v2))
    await asyncio.wait_for(held.reached.wait(), 10)
    await second.on_dataset_labeled(v1)
    await second.on_dataset_labeled(v2)
    held.release.set()
    assert await slow is None, "the stalled attempt's result is discarded"

    record = store.reports["screws@v2"]
    assert record.report_key == report_keys("screws", 2, attempt=2).report
    assert record.split_key is not None
    split = Split.model_validate_json(objects.objects[(Bucket.DATASETS, record.split_key)])
    report = ValidationReport.model_validate_json(
        objects.objects[(Bucket.DATASETS, record.report_key)]
    )
    assert split.inherited_from == report.split.inherited_from == 1
    assert report.dataset_digest == record.dataset_digest
    fixed = report_keys("screws", 2)
    for recorded, key in (
        (record.split_key, fixed.split),
        (record.report_key, fixed.report),
        (record.report_html_key, fixed.report_html),
    ):
        assert (
            objects.objects[(Bucket.DATASETS, key)] == objects.objects[(Bucket.DATASETS, recorded)]
        )
    assert first_said == [], "the stalled attempt announces nothing"
    [_, two] = second_said
    assert isinstance(two, DatasetValidated)
    assert two.payload.split_key == record.split_key
    assert two.payload.dataset_digest == record.dataset_digest
    stalled = report_keys("screws", 2, attempt=1).report
    assert (Bucket.DATASETS, stalled) in objects.objects, "unreferenced, left for the sweep"
    assert lost(reader) == 1


async def test_a_delivery_waits_while_a_live_attempt_holds_the_claim() -> None:
    """A rebalance hands v1 to a second replica while the first's attempt is alive: it takes
    nothing over, waits, and announces the verdict the holder recorded."""
    store, objects = FakeStore(), FakeObjects()
    v1 = await stage_version(objects, "screws", balanced(22))
    held = HeldStore(store, "complete_report")
    holder, holder_said = replica(cast(ValidationStore, held), objects)
    waiter, waiter_said = replica(store, objects)
    holding = asyncio.create_task(holder.on_dataset_labeled(v1))
    await asyncio.wait_for(held.reached.wait(), 10)
    store.live.add("screws@v1")

    waiting = asyncio.create_task(waiter.on_dataset_labeled(v1))
    await eventually(
        lambda: _true_or_none(store.claims >= 4), within=5, what="claims", interval=HEARTBEAT_S
    )
    assert not waiting.done()
    assert store.attempts["screws@v1"] == 1, "nothing taken over"
    held.release.set()
    await asyncio.wait_for(holding, 10)

    report = await asyncio.wait_for(waiting, 10)
    assert report is not None
    assert report.passed
    [said], [first] = waiter_said, holder_said
    assert said.event_id == first.event_id
    assert said.payload == first.payload


async def test_an_attempt_whose_renewal_finds_its_claim_taken_stops_before_writing() -> None:
    store, objects = FakeStore(), FakeObjects()
    v1 = await stage_version(objects, "screws", balanced(22))
    held = HeldStore(store, "latest_split_key")
    reader = InMemoryMetricReader()
    stalled, said = replica(cast(ValidationStore, held), objects, reader)

    running = asyncio.create_task(stalled.on_dataset_labeled(v1))
    await asyncio.wait_for(held.reached.wait(), 10)
    store.attempts["screws@v1"] = 2  # taken over by another replica meanwhile
    await eventually(
        lambda: _true_or_none(store.refused > 0), within=5, what="a renewal", interval=HEARTBEAT_S
    )
    held.release.set()

    assert await asyncio.wait_for(running, 10) is None
    assert said == []
    assert objects.keys(Bucket.DATASETS, "screws/v1/validation") == []
    assert lost(reader) == 1


async def _true_or_none(condition: bool) -> bool | None:
    return True if condition else None
