"""The evaluator's core on fakes: verdicts with their numbers, infra validation and cleanup in
Triton's repository, the comparison with production, idempotency, and the handlers on
FastStream's in-memory broker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from faststream.kafka import TestKafkaBroker
from screwops_bus import Bus
from screwops_contracts import (
    AssertionResult,
    Event,
    ModelApproved,
    ModelDeployed,
    ModelRejected,
    Topic,
)
from screwops_contracts.datasets import (
    Bucket,
    Label,
    LabelSet,
    Manifest,
    Split,
    SplitName,
)
from screwops_contracts.events import ModelTrained, ModelTrainedPayload
from screwops_contracts.models import DEFAULT_THRESHOLD, ModelKind, saved_model_prefix
from screwops_errors import InvalidInputError, NotFoundError, UnavailableError
from screwops_evaluator import handlers
from screwops_evaluator.config import Gate, Rules, Staging
from screwops_evaluator.report import EvaluationReport
from screwops_evaluator.service import EvaluatorService, evaluation_id_of, held_out_images
from screwops_evaluator.staging import StagingArea, staging_version
from screwops_serving import export_version, versions_present

from tests.fakes import FakeObjects, RecordingBus, memory_bus
from tests.support import (
    FRAME_SIZE,
    image_label,
    manifest_image,
    model_deployed,
    model_rolled_back,
)
from tests.unit.evaluator.builders import LAX, SHARP, evaluation_set, stage_split_version
from tests.unit.evaluator.fakes import FakeStore, FakeTriton

STAGING = "staging"
MODEL = "screws"
DATASET = "screws"


def cutoff(value: float) -> bytes:
    return f"cutoff:{value}".encode()


@dataclass
class Harness:
    service: EvaluatorService
    store: FakeStore
    objects: FakeObjects
    triton: FakeTriton
    emitted: RecordingBus
    repository: Path
    scratch: Path
    deployed: list[ModelDeployed] = field(default_factory=list)

    def trained(
        self,
        run_id: str,
        behaviour: bytes | None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        frame_size: int = FRAME_SIZE,
    ) -> ModelTrained:
        """The trainer's announcement of a run whose SavedModel answers as ``behaviour`` (None:
        nothing stored), with the threshold the run chose and its frame size."""
        prefix = saved_model_prefix(run_id)
        if behaviour is not None:
            self.objects.put_saved_model(prefix, behaviour)
        return ModelTrained.origin(
            ModelTrainedPayload(
                model_name=MODEL,
                run_id=run_id,
                dataset_id=DATASET,
                dataset_version=1,
                dataset_digest="digest",
                artifact_key=prefix,
                metrics={"val_accuracy": 0.99},
                threshold=threshold,
                frame_size=frame_size,
            ),
            producer="trainer",
        )

    async def evaluate(
        self, run_id: str, behaviour: bytes | None, *, threshold: float = DEFAULT_THRESHOLD
    ) -> Event[Any]:
        before = len(self.emitted)
        await self.service.on_model_trained(self.trained(run_id, behaviour, threshold=threshold))
        [verdict] = self.emitted[before:]
        return verdict

    async def deploy(
        self,
        version: int,
        behaviour: bytes,
        *,
        at: datetime | None = None,
        load: bool = True,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> ModelDeployed:
        """What the registry does and says: ``version`` of MODEL serves in Triton at
        ``threshold``."""
        source = self.scratch / f"production-{version}"
        source.mkdir()
        (source / "saved_model.pb").write_bytes(behaviour)
        export_version(source, self.repository, name=MODEL, version=version, frame_size=FRAME_SIZE)
        if load:
            await self.triton.load(MODEL)
        event = model_deployed(MODEL, version, run_id=f"run-v{version}", at=at)
        event = event.model_copy(
            update={"payload": event.payload.model_copy(update={"threshold": threshold})}
        )
        await self.service.on_model_deployed(event)
        return event

    def staged_versions(self) -> list[int]:
        return versions_present(self.repository, name=STAGING)

    def report(self, key: str) -> EvaluationReport:
        return EvaluationReport.model_validate_json(self.objects.objects[(Bucket.MODELS, key)])


def checks_of(event: Event[Any]) -> dict[str, AssertionResult]:
    return {c.name: c for c in event.payload.checks}


def make_harness(tmp_path: Path, *, gate: Gate | None = None, max_batch_size: int = 32) -> Harness:
    repository = tmp_path / "repository"
    store = FakeStore()
    objects = FakeObjects()
    triton = FakeTriton(repository)
    emitted = RecordingBus("evaluator")
    rules = Rules(
        Staging(repository=repository, model=STAGING, max_batch_size=max_batch_size),
        gate=gate or Gate(),
        concurrency=4,
    )
    staging = StagingArea(triton, objects, rules.staging)
    service = EvaluatorService(store, objects, staging, emitted.emit, rules=rules)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return Harness(service, store, objects, triton, emitted, repository, scratch)


@pytest.fixture
async def h(tmp_path: Path) -> Harness:
    harness = make_harness(tmp_path)
    await stage_split_version(harness.objects, DATASET, *evaluation_set())
    return harness


async def test_a_good_first_model_is_approved_with_its_numbers(h: Harness) -> None:
    trained = h.trained("run-a", cutoff(LAX))
    await h.service.on_model_trained(trained)

    [approved] = h.emitted
    assert isinstance(approved, ModelApproved)
    assert (approved.causation_id, approved.correlation_id) == (
        trained.event_id,
        trained.correlation_id,
    )
    payload = approved.payload
    evaluation_id = evaluation_id_of(MODEL, "run-a")
    assert payload.evaluation_id == evaluation_id
    assert payload.report_key == f"evaluations/{evaluation_id}/attempts/1.json"
    assert (
        h.objects.objects[(Bucket.MODELS, f"evaluations/{evaluation_id}.json")]
        == (h.objects.objects[(Bucket.MODELS, payload.report_key)])
    )
    assert (payload.run_id, payload.dataset_id, payload.dataset_version) == ("run-a", DATASET, 1)
    assert payload.artifact_key == saved_model_prefix("run-a")
    assert payload.champion_version is None
    assert payload.metrics["accuracy"] == pytest.approx(0.96)
    assert payload.metrics["recall"] == pytest.approx(0.9)
    assert payload.metrics["test_images"] == 50
    assert payload.metrics["recall_scratch_neck"] == 0.0
    assert payload.metrics["recall_scratch_head"] == 1.0
    assert payload.metrics["roc_auc"] == 1.0, "the borderline defects still rank above goods"
    checks = checks_of(approved)
    assert list(checks) == [
        "infra_validation",
        "test_split_size",
        "accuracy",
        "defect_recall",
        "defect_type_recall",
        "roc_auc",
        "champion_comparison",
        "champion_recall_comparison",
    ]
    assert all(c.passed for c in checks.values())
    assert (payload.threshold, payload.model_kind) == (0.5, ModelKind.SUPERVISED)
    # The registry serves the version at the frame size the trainer announced.
    assert payload.frame_size == FRAME_SIZE
    assert payload.metrics["accuracy_ci_low"] < 0.96 < payload.metrics["accuracy_ci_high"]
    assert payload.metrics["recall_ci_low"] < 0.9 < payload.metrics["recall_ci_high"]
    # 6 test images of each plain defect type are gated; 2 of scratch_neck are too few.
    assert checks["defect_type_recall"].message.endswith("not gated (< 5 images): scratch_neck")
    assert checks["champion_comparison"].message == "no production model yet"
    assert checks["accuracy"].observed == pytest.approx(0.96)

    version = staging_version(evaluation_id)
    assert (STAGING, frozenset({version})) in h.triton.loads, "it was loaded in staging"
    assert h.staged_versions() == [], "and removed from the repository"
    assert STAGING not in h.triton.loaded, "and unloaded"

    report = h.report(payload.report_key)
    assert report.passed
    assert report.infra.served
    assert (report.infra.triton_model, report.infra.version) == (STAGING, version)
    assert report.metrics is not None
    assert report.metrics.confusion.false_negatives == 2
    assert report.champion is None
    assert len(report.images) == 50
    assert report.gate == Gate()
    assert report.cause_event_id == str(trained.event_id)
    record = h.store.evaluations[evaluation_id]
    assert (record.passed, record.metrics, record.checks) == (True, payload.metrics, payload.checks)


async def test_a_model_that_guesses_is_rejected_with_each_reason(h: Harness) -> None:
    rejected = await h.evaluate("run-guess", b"constant:0.3")

    assert isinstance(rejected, ModelRejected)
    checks = checks_of(rejected)
    assert checks["infra_validation"].passed
    accuracy = checks["accuracy"]
    assert not accuracy.passed
    assert accuracy.observed == pytest.approx(0.6)
    assert accuracy.message == (
        "accuracy 0.6000 (95% CI 0.4618-0.7239): 30 of 50 test images right at threshold 0.5"
    )
    recall = checks["defect_recall"]
    assert (recall.passed, recall.observed) == (False, 0.0)
    assert rejected.payload.metrics["accuracy"] == pytest.approx(0.6)
    assert h.staged_versions() == []
    assert STAGING not in h.triton.loaded


async def test_a_model_that_cannot_load_is_rejected_by_infra_validation(h: Harness) -> None:
    rejected = await h.evaluate("run-broken", b"broken")

    assert isinstance(rejected, ModelRejected)
    [infra] = rejected.payload.checks
    assert (infra.name, infra.passed) == ("infra_validation", False)
    assert "failed to load" in infra.message
    assert rejected.payload.metrics == {}
    report = h.report(rejected.payload.report_key)
    assert not report.infra.served
    assert report.metrics is None
    assert report.infra.failure is not None
    assert h.staged_versions() == []
    assert STAGING not in h.triton.loaded


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (None, "no usable SavedModel at models/runs/run-x/saved_model"),
        (b"nan", "answered 50 value(s) that are not probabilities"),
    ],
)
async def test_a_missing_artifact_or_nonsense_answers_fail_infra_validation(
    h: Harness, behaviour: bytes | None, reason: str
) -> None:
    rejected = await h.evaluate("run-x", behaviour)

    assert isinstance(rejected, ModelRejected)
    [infra] = rejected.payload.checks
    assert not infra.passed
    assert reason in infra.message
    assert h.staged_versions() == []


async def test_test_images_with_no_screw_found_count_as_defects_and_are_reported(
    h: Harness,
) -> None:
    """The blind model finds no screw in the 18 plain defects' frames and calls the rest good:
    those 18 are defect verdicts at 1.0, the 2 borderline ones are missed."""
    verdict = await h.evaluate("run-blind", b"blind:0.0")

    recall = checks_of(verdict)["defect_recall"]
    assert recall.observed == pytest.approx(18 / 20)
    assert verdict.payload.metrics["no_part_images"] == 18
    report = h.report(verdict.payload.report_key)
    assert (report.infra.no_part_images, report.infra.frame_size) == (18, FRAME_SIZE)
    plain = [i for i in report.images if i.label == "bad" and i.defect_type != "scratch_neck"]
    assert {i.probability for i in plain} == {1.0}


async def test_a_run_from_before_frame_input_fails_infra_validation_saying_to_retrain(
    h: Harness,
) -> None:
    before = len(h.emitted)
    await h.service.on_model_trained(h.trained("run-old", cutoff(SHARP), frame_size=0))
    [rejected] = h.emitted[before:]

    assert isinstance(rejected, ModelRejected)
    [infra] = rejected.payload.checks
    assert not infra.passed
    assert "retrain" in infra.message
    assert h.staged_versions() == []
    assert STAGING not in h.triton.loaded


async def test_test_images_are_scored_in_batches_no_larger_than_allowed(tmp_path: Path) -> None:
    h = make_harness(tmp_path, max_batch_size=8)
    await stage_split_version(h.objects, DATASET, *evaluation_set())

    await h.evaluate("run-a", cutoff(SHARP))

    sizes = [size for name, _, size in h.triton.inferences if name == STAGING]
    assert sizes == [1, 8, 8, 8, 8, 8, 8, 2], "the warm-up, then 50 images in batches of 8"


async def test_a_candidate_worse_than_production_is_rejected(h: Harness) -> None:
    await h.deploy(1, cutoff(SHARP))

    rejected = await h.evaluate("run-lax", cutoff(LAX))

    assert isinstance(rejected, ModelRejected)
    checks = checks_of(rejected)
    assert [name for name, c in checks.items() if not c.passed] == [
        "champion_comparison",
        "champion_recall_comparison",
    ]
    comparison = checks["champion_comparison"]
    assert comparison.observed == pytest.approx(-0.04)
    assert comparison.message == (
        "accuracy 0.9600 vs production version 1's 1.0000 at its threshold 0.5 "
        "(difference -0.0400, allowed drop 0.02)"
    )
    assert checks["champion_recall_comparison"].observed == pytest.approx(-0.1)
    assert rejected.payload.metrics["champion_accuracy"] == 1.0
    assert (MODEL, 1, 32) in h.triton.inferences, "production was pinned to its version"
    report = h.report(rejected.payload.report_key)
    assert report.champion is not None
    assert (report.champion.version, report.champion.run_id) == (1, "run-v1")
    assert report.champion.metrics is not None
    assert report.champion.metrics.accuracy == 1.0
    assert all(score.champion_probability is not None for score in report.images)
    assert h.triton.loaded[MODEL] == {1: cutoff(SHARP)}, "production is left as it was"


async def test_a_candidate_is_judged_at_the_threshold_its_run_chose(h: Harness) -> None:
    """LAX scores its borderline defects about 0.0006 and good screws under 1e-8: at 0.5 it
    misses them, at the 0.0001 its run chose on validation it catches every defect."""
    await h.deploy(1, cutoff(SHARP))

    approved = await h.evaluate("run-lax", cutoff(LAX), threshold=0.0001)

    assert isinstance(approved, ModelApproved)
    assert approved.payload.threshold == 0.0001
    assert approved.payload.metrics["threshold"] == 0.0001
    assert approved.payload.metrics["accuracy"] == 1.0
    assert checks_of(approved)["accuracy"].message.endswith("right at threshold 0.0001")
    report = h.report(approved.payload.report_key)
    assert report.threshold == 0.0001
    assert h.store.evaluations[approved.payload.evaluation_id].threshold == 0.0001


async def test_production_is_judged_at_its_own_threshold(h: Harness) -> None:
    await h.deploy(1, cutoff(LAX), threshold=0.0001)

    rejected = await h.evaluate("run-lax-at-half", cutoff(LAX))

    assert isinstance(rejected, ModelRejected)
    comparison = checks_of(rejected)["champion_comparison"]
    assert comparison.observed == pytest.approx(-0.04), "production caught the borderline two"
    assert "production version 1's 1.0000 at its threshold 0.0001" in comparison.message
    report = h.report(rejected.payload.report_key)
    assert report.champion is not None
    assert report.champion.threshold == 0.0001


async def test_a_candidate_as_good_as_production_is_approved_against_it(h: Harness) -> None:
    await h.deploy(1, cutoff(LAX))

    approved = await h.evaluate("run-sharp", cutoff(SHARP))

    assert isinstance(approved, ModelApproved)
    assert approved.payload.champion_version == 1
    comparison = checks_of(approved)["champion_comparison"]
    assert comparison.passed
    assert comparison.observed == pytest.approx(0.04)


async def test_production_that_cannot_be_scored_is_skipped(h: Harness) -> None:
    await h.deploy(1, cutoff(SHARP), load=False)

    approved = await h.evaluate("run-lax", cutoff(LAX))

    assert isinstance(approved, ModelApproved)
    assert approved.payload.champion_version is None, "nothing was compared"
    comparison = checks_of(approved)["champion_comparison"]
    assert comparison.passed
    assert comparison.message.startswith("skipped: production version 1 could not be scored")
    report = h.report(approved.payload.report_key)
    assert report.champion is not None
    assert report.champion.skipped is not None
    assert report.champion.metrics is None


async def test_production_follows_deployments_and_rollbacks_in_time_order(h: Harness) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await h.deploy(1, cutoff(SHARP), at=start)
    await h.deploy(2, cutoff(LAX), at=start + timedelta(minutes=1))
    champion = await h.store.get_champion(MODEL)
    assert champion is not None
    assert (champion.version, champion.run_id) == (2, "run-v2")

    rollback = model_rolled_back(MODEL, 2, 1, at=start + timedelta(minutes=2))
    await h.service.on_model_rolled_back(rollback)
    champion = await h.store.get_champion(MODEL)
    assert champion is not None
    assert (champion.version, champion.run_id, champion.triton_model) == (1, "run-v1", MODEL)

    late = model_deployed(MODEL, 2, run_id="run-v2", at=start + timedelta(minutes=1, seconds=30))
    await h.service.on_model_deployed(late)  # delivered late, from another topic
    champion = await h.store.get_champion(MODEL)
    assert champion is not None
    assert champion.version == 1, "an older move never overrides a newer one"


async def test_a_run_is_judged_once_and_its_verdict_announced_again(h: Harness) -> None:
    first = h.trained("run-a", cutoff(SHARP))
    await h.service.on_model_trained(first)
    await h.service.on_model_trained(first)  # redelivered
    again = h.trained("run-a", cutoff(SHARP))  # the trainer reusing the run
    await h.service.on_model_trained(again)

    assert [type(e) for e in h.emitted] == [ModelApproved] * 3
    assert h.emitted[0].event_id == h.emitted[1].event_id, "same cause, same event"
    assert h.emitted[2].causation_id == again.event_id
    assert {e.payload.model_dump_json() for e in h.emitted} == {
        h.emitted[0].payload.model_dump_json()
    }
    assert len([load for load in h.triton.loads if load[0] == STAGING]) == 1, "judged once"
    assert len(h.store.evaluations) == 1


async def test_triton_down_is_transient_and_leaves_nothing_staged(h: Harness) -> None:
    h.triton.down = True

    with pytest.raises(UnavailableError):
        await h.service.on_model_trained(h.trained("run-a", cutoff(SHARP)))

    assert h.staged_versions() == []
    assert h.emitted == []
    assert h.store.evaluations == {}


async def test_another_broken_staging_version_does_not_fail_this_one(h: Harness) -> None:
    other = h.scratch / "other"
    other.mkdir()
    (other / "saved_model.pb").write_bytes(b"broken")
    export_version(other, h.repository, name=STAGING, version=1, frame_size=FRAME_SIZE)

    approved = await h.evaluate("run-a", cutoff(SHARP))

    assert isinstance(approved, ModelApproved)
    assert h.staged_versions() == [1], "the other evaluation's version is left alone"


def test_held_out_images_are_the_test_split_with_their_defect_types() -> None:
    manifest = Manifest(
        dataset_id="d",
        version=2,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        images=[
            manifest_image("a" * 64, "thread_top"),
            manifest_image("b" * 64),
            manifest_image("c" * 64),
        ],
    )
    labels = LabelSet(
        dataset_id="d",
        version=2,
        labels=[
            image_label("a" * 64, Label.BAD),
            image_label("b" * 64, Label.BAD, "scratch_head"),
            image_label("c" * 64, Label.GOOD),
        ],
    )
    split = Split(
        dataset_id="d",
        version=2,
        seed=0,
        assignments={"a" * 64: SplitName.TEST, "b" * 64: SplitName.TEST, "c" * 64: "train"},
    )

    chosen = held_out_images(manifest, labels, split)

    assert [(i.sha256[0], i.label, i.defect_type) for i in chosen] == [
        ("a", Label.BAD, "thread_top"),
        ("b", Label.BAD, "scratch_head"),
    ]
    with pytest.raises(InvalidInputError, match="which the label set lacks"):
        held_out_images(manifest, labels.model_copy(update={"labels": labels.labels[1:]}), split)
    with pytest.raises(InvalidInputError, match="test split of d v2 is empty"):
        held_out_images(manifest, labels, split.model_copy(update={"assignments": {}}))
    with pytest.raises(InvalidInputError, match="the manifest is for d v1"):
        held_out_images(manifest.model_copy(update={"version": 1}), labels, split)


async def test_a_version_without_a_split_is_refused(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    with pytest.raises(NotFoundError, match=r"manifest\.json"):
        await h.service.on_model_trained(h.trained("run-a", cutoff(SHARP)))
    assert h.triton.loads == [], "nothing reaches Triton"


# --- the handlers on FastStream's in-memory broker ------------------------------------------


@dataclass
class Wired:
    bus: Bus
    harness: Harness
    received: list[Event[Any]]


@pytest.fixture
async def wired(tmp_path: Path) -> AsyncIterator[Wired]:
    harness = make_harness(tmp_path)
    await stage_split_version(harness.objects, DATASET, *evaluation_set())
    bus = memory_bus("evaluator")
    rules = Rules(Staging(repository=harness.repository, model=STAGING), concurrency=4)
    staging = StagingArea(harness.triton, harness.objects, rules.staging)
    service = EvaluatorService(harness.store, harness.objects, staging, bus.emit, rules=rules)
    handlers.register(bus, service)
    received: list[Event[Any]] = []

    @bus.broker.subscriber(Topic.MODEL_APPROVED)
    async def on_approved(event: ModelApproved) -> None:
        received.append(event)

    @bus.broker.subscriber(Topic.MODEL_REJECTED)
    async def on_rejected(event: ModelRejected) -> None:
        received.append(event)

    async with TestKafkaBroker(bus.broker):
        yield Wired(bus, harness, received)


async def test_the_handlers_judge_runs_and_follow_production(wired: Wired) -> None:
    h = wired.harness
    source = h.scratch / "production"
    source.mkdir()
    (source / "saved_model.pb").write_bytes(cutoff(SHARP))
    export_version(source, h.repository, name=MODEL, version=4, frame_size=FRAME_SIZE)
    await h.triton.load(MODEL)
    await wired.bus.publish(model_deployed(MODEL, 4, run_id="r4"))
    trained = h.trained("run-lax", cutoff(LAX))

    await wired.bus.publish(trained)
    await wired.bus.publish(trained)  # redelivered: processed once

    [event] = wired.received
    assert isinstance(event, ModelRejected)
    assert (event.producer, event.causation_id) == ("evaluator", trained.event_id)
    assert not checks_of(event)["champion_comparison"].passed
    assert (
        json.loads(h.objects.objects[(Bucket.MODELS, event.payload.report_key)])["champion"][
            "version"
        ]
        == 4
    )
