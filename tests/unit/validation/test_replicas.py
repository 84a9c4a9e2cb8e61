"""Two validations of one version at once (a rebalance hands ``dataset.labeled`` to a second
replica while the first still judges it), the split they inherit having changed between them:
the record, the split and report it names, the copies at the version's fixed keys and both
announcements are one attempt's."""

from __future__ import annotations

import asyncio
from typing import cast

from screwops_contracts import DatasetValidated
from screwops_contracts.datasets import Bucket, Split
from screwops_validation.config import Rules
from screwops_validation.report import ValidationReport
from screwops_validation.service import ValidationService, report_keys
from screwops_validation.store import ValidationStore

from tests.fakes import FakeObjects, HeldStore, RecordingBus
from tests.unit.validation.builders import balanced, stage_version
from tests.unit.validation.fakes import FakeStore


def replica(store: ValidationStore, objects: FakeObjects) -> tuple[ValidationService, RecordingBus]:
    emitted = RecordingBus("validation")
    service = ValidationService(store, objects, emitted.emit, rules=Rules(concurrency=4))
    return service, emitted


async def test_two_validations_of_one_version_at_once_record_one_split_and_its_reports() -> None:
    store, objects = FakeStore(), FakeObjects()
    first_files = balanced(22)
    v1 = await stage_version(objects, "screws", first_files)
    v2 = await stage_version(objects, "screws", [*first_files, *balanced(8, offset=300)], version=2)
    held = HeldStore(store, "complete_report")
    first, first_said = replica(cast(ValidationStore, held), objects)
    second, second_said = replica(store, objects)

    # The first replica judges v2 before v1 is validated, so it inherits no split; the second,
    # handed v2 after v1 was validated, inherits v1's.
    slow = asyncio.create_task(first.on_dataset_labeled(v2))
    await asyncio.wait_for(held.reached.wait(), 10)
    await second.on_dataset_labeled(v1)
    await second.on_dataset_labeled(v2)
    held.release.set()
    await slow

    record = store.reports["screws@v2"]
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
    [one] = first_said
    [_, two] = second_said
    assert isinstance(one, DatasetValidated)
    assert one.event_id == two.event_id
    assert one.payload == two.payload
    assert one.payload.split_key == record.split_key
    assert one.payload.dataset_digest == record.dataset_digest
