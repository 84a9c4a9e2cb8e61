"""Validation's domain logic: a labeled version in, assertions, reports and a split out.

On ``dataset.labeled`` the version's manifest and label set are read, every labeled image is
fetched, decoded and reduced to a few numbers (size, mode, brightness, contrast, sharpness, a
perceptual hash and a digest of its pixels), and the version is judged by pure functions over those
numbers. Near-duplicate images are grouped first so that a group never straddles two splits; the
split is stratified by (label, defect type), keeps every image the newest earlier validated
version split where that version put it, and places the new images by content hash, so it is
fully determined by the images, their labels, the earlier split and the seed. A version that
passes gets its ``split.json`` and ``dataset.validated``; one that fails gets
``dataset.rejected`` naming each failed assertion with its numbers. Both get a JSON and an
HTML report.

A validation is claimed in MongoDB before anything is written (:mod:`screwops_storage.claims`):
the claim's attempt number names the attempt's split and reports
(``<dataset>/v<N>/validation/attempts/<n>/``, each written once), and the attempt renews its
claim while it runs. A second delivery of the version (a rebalance) waits while the claim is
alive; one whose worker is gone or ran past ``max_run_s`` is taken over by a new attempt with the
next number, and the one it was taken from, should it still be running, stops at its next step
and writes nothing: only the attempt holding the claim completes the record, so its result is
discarded (logged and counted in ``screwops_attempts_lost``). A redelivered event finds the
record and announces it again, with the same event id. The recorded split and reports are then
copied to the version's fixed keys (``split.json``, ``validation/report.json`` and ``.html``),
where the evaluator and the console find them from the version alone; only holders of the
complete record write those keys, always with the recorded bytes. The objects of attempts that
lost are deleted by a periodic sweep (:meth:`ValidationService.keep_sweeping`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from opentelemetry.metrics import MeterProvider
from pydantic import BaseModel
from screwops_bus import Emit
from screwops_contracts import (
    AssertionResult,
    DatasetLabeled,
    DatasetRejected,
    DatasetRejectedPayload,
    DatasetValidated,
    DatasetValidatedPayload,
    SplitCounts,
)
from screwops_contracts.datasets import (
    Bucket,
    DigestRow,
    ImageLabel,
    Label,
    LabelSet,
    Manifest,
    ManifestImage,
    Split,
    SplitName,
    canonical_json,
    check_version,
    dataset_digest,
    first_labels,
    manifest_key,
    parse_document,
    split_key,
    version_prefix,
)
from screwops_contracts.models import ModelKind
from screwops_errors import IntegrityError, InvalidInputError, NotFoundError
from screwops_storage import ClaimLostError, Lease, claim_when_free, keep_sweeping
from screwops_telemetry.claims import ClaimMetrics

from screwops_validation.checks import (
    check_enough_for_model,
    check_exact_duplicates,
    check_exact_duplicates_across_splits,
    check_images_decode,
    check_labels,
    check_min_per_class,
    check_near_duplicates,
    check_size_and_mode,
    check_split_drift,
    class_ratio,
    class_stats,
    drift_figures,
    exact_duplicate_groups,
)
from screwops_validation.config import Rules, Thresholds
from screwops_validation.measures import Sample, measure
from screwops_validation.report import (
    DriftFigure,
    DuplicateGroup,
    ImageProblem,
    NearDuplicates,
    ReportKeys,
    SplitSummary,
    ValidationReport,
    render_html,
)
from screwops_validation.split import (
    SPLITS,
    SplitUnit,
    cluster,
    find_near_duplicates,
    split_counts,
    stratified_split,
)
from screwops_validation.store import Objects, ReportRecord, ValidationStore, report_id

log = logging.getLogger("screwops.validation")

D = TypeVar("D", bound=BaseModel)


# --- judging a version -------------------------------------------------------------------------


def report_keys(dataset_id: str, version: int, attempt: int | None = None) -> ReportKeys:
    """Where a version's validation outputs live in the datasets bucket: those of the attempt
    its claim numbered ``attempt``, or (None) the version's fixed keys the recorded attempt's are
    copied to."""
    prefix = version_prefix(dataset_id, version)
    if attempt is None:
        return ReportKeys(
            split=split_key(dataset_id, version),
            report=f"{prefix}/validation/report.json",
            report_html=f"{prefix}/validation/report.html",
        )
    folder = f"{prefix}/validation/attempts/{attempt}"
    return ReportKeys(
        split=f"{folder}/split.json",
        report=f"{folder}/report.json",
        report_html=f"{folder}/report.html",
    )


_ATTEMPT_KEY = re.compile(
    r"(?P<dataset>.+)/v(?P<version>\d+)/validation/attempts/(?P<attempt>\d+)/[^/]+"
)


def report_attempt(key: str) -> tuple[str, int] | None:
    """The record id and attempt number of a key :func:`report_keys` gives an attempt; None
    for any other key."""
    found = _ATTEMPT_KEY.fullmatch(key)
    if found is None:
        return None
    return report_id(found["dataset"], int(found["version"])), int(found["attempt"])


def labeled_images(manifest: Manifest, labels: LabelSet) -> list[tuple[ManifestImage, ImageLabel]]:
    """The manifest's images that carry a label, each with its (first) label, by sha256."""
    first = first_labels(labels)
    return [(image, first[image.sha256]) for image in manifest.images if image.sha256 in first]


def digest_rows(samples: Sequence[Sample], assignments: Mapping[str, SplitName]) -> list[DigestRow]:
    """The split samples as rows of :func:`~screwops_contracts.datasets.dataset_digest`."""
    return [
        (s.image.sha256, s.label.label, s.label.defect_type, assignments[s.image.sha256])
        for s in samples
        if s.image.sha256 in assignments
    ]


@dataclass(frozen=True)
class _Findings:
    """What a version's assertions judge and its report shows, worked out once for both."""

    unique: list[Sample]
    """Each image once, decoded or not."""
    usable: list[Sample]
    """The decoded images with an allowed label: the ones that are split."""
    assignments: dict[str, SplitName]
    kept: Mapping[str, SplitName]
    """The earlier version's split, which the usable images it names keep."""
    counts: SplitCounts
    class_counts: dict[str, int]
    per_split: dict[SplitName, Counter[str]]
    duplicates: list[list[Sample]]
    near: NearDuplicates
    drift: list[DriftFigure]


def _split_usable(
    usable: Sequence[Sample], rules: Thresholds, kept: Mapping[str, SplitName]
) -> tuple[list[int], dict[str, SplitName]]:
    """Each usable sample's near-duplicate group, and the split that keeps every group in one
    split and every image of ``kept`` where it was."""
    measures = [s.measure for s in usable if s.measure is not None]
    groups = cluster(
        [m.phash for m in measures],
        [m.pixel_digest for m in measures],
        rules.near_duplicate_distance,
    )
    assignments = stratified_split(
        [
            SplitUnit(
                s.image.sha256,
                s.label.label.value,
                s.label.defect_type,
                group,
                s.image.origin_split,
            )
            for s, group in zip(usable, groups, strict=True)
        ],
        rules.fractions,
        rules.split_seed,
        previous=kept,
        model_kind=rules.model_kind,
    )
    return groups, assignments


def _findings(samples: Sequence[Sample], rules: Thresholds, previous: Split | None) -> _Findings:
    """Split the usable samples and count, group and compare what the assertions judge."""
    allowed = [label.value for label in rules.allowed_labels]
    unique = list({s.image.sha256: s for s in samples}.values())
    usable = [s for s in unique if s.measure is not None and s.label.label.value in allowed]
    kept = previous.assignments if previous else {}
    groups, assignments = _split_usable(usable, rules, kept)
    per_class = Counter(s.label.label.value for s in usable)
    return _Findings(
        unique=unique,
        usable=usable,
        assignments=assignments,
        kept=kept,
        counts=split_counts(assignments),
        class_counts={label: per_class.get(label, 0) for label in allowed},
        per_split={
            name: Counter(
                s.label.label.value for s in usable if assignments[s.image.sha256] == name
            )
            for name in SPLITS
        },
        duplicates=exact_duplicate_groups(samples),
        near=find_near_duplicates(
            usable,
            groups,
            assignments,
            max_distance=rules.near_duplicate_distance,
            listed=rules.max_reported_pairs,
        ),
        drift=drift_figures(usable, assignments, rules),
    )


def _assertions(
    manifest: Manifest,
    labels: LabelSet,
    samples: Sequence[Sample],
    found: _Findings,
    rules: Thresholds,
) -> list[AssertionResult]:
    """Every assertion a version must pass, in the order the report lists them."""
    # A good-only model needs no defect at all: only the good class must be big enough.
    needed = (
        {Label.GOOD.value: found.class_counts.get(Label.GOOD.value, 0)}
        if rules.model_kind == ModelKind.GOOD_ONLY
        else found.class_counts
    )
    return [
        check_images_decode(samples),
        check_size_and_mode([s.measure for s in found.unique if s.measure is not None], rules),
        check_labels(manifest, labels, rules),
        check_min_per_class(needed, rules.min_per_class),
        check_enough_for_model(found.per_split, rules),
        check_exact_duplicates(found.duplicates, rules.max_exact_duplicates),
        check_exact_duplicates_across_splits(found.usable, found.assignments),
        check_near_duplicates(found.near, rules.max_cross_split_near_duplicates),
        check_split_drift(found.drift, found.counts, rules),
    ]


def _report(
    manifest: Manifest,
    labels: LabelSet,
    samples: Sequence[Sample],
    found: _Findings,
    judged: list[AssertionResult],
    rules: Thresholds,
    *,
    cause: DatasetLabeled,
    previous: Split | None,
    attempt: int | None,
) -> ValidationReport:
    """The version's report: the assertions with the numbers behind them, and, when it passes,
    where its split is and the digest training will be fed."""
    keys = report_keys(manifest.dataset_id, manifest.version, attempt)
    allowed = [label.value for label in rules.allowed_labels]
    passed = all(a.passed for a in judged)
    return ValidationReport(
        dataset_id=manifest.dataset_id,
        version=manifest.version,
        cause_event_id=str(cause.event_id),
        labeled_at=cause.occurred_at,
        manifest_image_count=len(manifest.images),
        labeled_count=len(labels.labels),
        excluded_count=len(labels.excluded),
        passed=passed,
        assertions=judged,
        class_stats=class_stats(found.usable, allowed),
        class_ratio=class_ratio(found.class_counts),
        exact_duplicates=[
            DuplicateGroup(
                pixel_digest=group[0].measure.pixel_digest if group[0].measure else "",
                filenames=[s.image.filename for s in group],
                sha256s=[s.image.sha256 for s in group],
            )
            for group in found.duplicates
        ],
        near_duplicates=found.near,
        undecodable=[
            ImageProblem(sha256=s.image.sha256, filename=s.image.filename, reason=s.problem)
            for s in samples
            if s.measure is None
        ],
        split=SplitSummary(
            seed=rules.split_seed,
            fractions=dict(zip([s.value for s in SPLITS], rules.fractions, strict=True)),
            counts=found.counts,
            per_class={
                label: {name.value: found.per_split[name].get(label, 0) for name in SPLITS}
                for label in allowed
            },
            inherited_from=previous.version if previous else None,
            kept=sum(1 for sha256 in found.assignments if sha256 in found.kept),
        ),
        drift=found.drift,
        thresholds=rules,
        keys=keys,
        split_key=keys.split if passed else None,
        dataset_digest=(
            dataset_digest(digest_rows(found.usable, found.assignments)) if passed else None
        ),
    )


def analyse(
    manifest: Manifest,
    labels: LabelSet,
    samples: Sequence[Sample],
    rules: Thresholds,
    *,
    cause: DatasetLabeled,
    previous: Split | None = None,
    attempt: int | None = None,
) -> tuple[ValidationReport, Split]:
    """Judge a version from its measured samples: every assertion, the split and the report.

    ``previous`` is the split of the newest earlier validated version: its images keep their
    split here. ``attempt`` is the claim's number the report's keys are of (None: the version's
    fixed keys). Pure: the same inputs give the same report and split, byte for byte.
    """
    found = _findings(samples, rules, previous)
    judged = _assertions(manifest, labels, samples, found, rules)
    split = Split(
        dataset_id=manifest.dataset_id,
        version=manifest.version,
        seed=rules.split_seed,
        assignments=dict(sorted(found.assignments.items())),
        inherited_from=previous.version if previous else None,
    )
    return (
        _report(
            manifest,
            labels,
            samples,
            found,
            judged,
            rules,
            cause=cause,
            previous=previous,
            attempt=attempt,
        ),
        split,
    )


# --- the service -------------------------------------------------------------------------------


class ValidationService:
    """Judges labeled versions (see the module docstring)."""

    def __init__(
        self,
        store: ValidationStore,
        objects: Objects,
        emit: Emit,
        *,
        rules: Rules,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._store = store
        self._objects = objects
        self._emit = emit
        self._rules = rules.thresholds
        self._concurrency = rules.concurrency
        self._claims = rules.claims
        self._sweep = rules.sweep
        self._metrics = ClaimMetrics("validation", meter_provider)

    async def on_dataset_labeled(self, event: DatasetLabeled) -> ValidationReport | None:
        """Validate the version ``event`` names, store its outputs and emit the verdict; None
        when this attempt lost its claim to a later one (which announces the verdict).

        Raises:
            NotFoundError: the manifest or the label set is missing.
            InvalidInputError: either document is malformed or names another version.
            TransientError: MinIO or MongoDB did not answer (the bus retries).
        """
        payload = event.payload
        claimed: int | ReportRecord = await claim_when_free(
            functools.partial(
                self._store.claim_report, payload.dataset_id, payload.version, times=self._claims
            ),
            times=self._claims,
            name=report_id(payload.dataset_id, payload.version),
        )
        if isinstance(claimed, ReportRecord):
            log.info(
                "%s v%d was validated before; announcing it again",
                claimed.dataset_id,
                claimed.version,
            )
            recorded = await self._publish(claimed)
            await self._announce(claimed, event)
            return parse_document(ValidationReport, claimed.report_key, recorded)
        name = f"{report_id(payload.dataset_id, payload.version)} attempt {claimed}"
        renew = functools.partial(
            self._store.renew_report, payload.dataset_id, payload.version, claimed
        )
        try:
            async with Lease(renew, interval_s=self._claims.heartbeat_s, name=name) as lease:
                report, record = await self._validate(event, claimed, lease)
        except ClaimLostError as lost:
            self._metrics.lost()
            log.warning("%s: its verdict is discarded", lost)
            return None
        recorded = await self._publish(record)
        if record.report_key != report.keys.report:
            report = parse_document(ValidationReport, record.report_key, recorded)
        await self._announce(record, event)
        failed = [a.name for a in report.assertions if not a.passed]
        log.info("%s v%d: %s", report.dataset_id, report.version, failed or "validated")
        return report

    async def keep_sweeping(self) -> None:
        """Every sweep interval, delete the objects of attempts that lost (see the module
        docstring); runs until cancelled."""
        await keep_sweeping(self.sweep, interval_s=self._sweep.interval_s)

    async def sweep(self) -> list[str]:
        """Delete the objects of attempts that lost, older than the minimum age: their keys."""
        swept = await self._store.sweep_attempts(
            self._objects, report_attempt, min_age_s=self._sweep.min_age_s
        )
        self._metrics.swept(len(swept))
        return swept

    async def _validate(
        self, event: DatasetLabeled, attempt: int, lease: Lease
    ) -> tuple[ValidationReport, ReportRecord]:
        """Attempt ``attempt`` at the version: its report and the record as completed."""
        payload = event.payload
        manifest = await self._document(Manifest, manifest_key(payload.dataset_id, payload.version))
        labels = await self._document(LabelSet, payload.labels_key)
        check_version(
            payload.dataset_id, payload.version, ("manifest", manifest), ("label set", labels)
        )
        previous = await self._previous_split(payload.dataset_id, payload.version)
        samples = await self._measure_all(labeled_images(manifest, labels))
        report, split = await asyncio.to_thread(
            analyse,
            manifest,
            labels,
            samples,
            self._rules,
            cause=event,
            previous=previous,
            attempt=attempt,
        )
        return report, await self._record(report, split, attempt, lease)

    async def _previous_split(self, dataset_id: str, version: int) -> Split | None:
        """The split of the newest validated version before ``version``: it holds every image
        an earlier version has split (each version keeps its predecessor's), so it is the only
        one to read."""
        key = await self._store.latest_split_key(dataset_id, before=version)
        if key is None:
            return None
        split = await self._document(Split, key)
        if split.dataset_id != dataset_id or split.version >= version:
            raise InvalidInputError(
                f"datasets/{key} is the split of {split.dataset_id} v{split.version}, not of an "
                f"earlier version of {dataset_id}"
            )
        return split

    async def _document(self, model: type[D], key: str) -> D:
        return parse_document(model, key, await self._objects.get_verified(Bucket.DATASETS, key))

    async def _measure_all(
        self, images: Sequence[tuple[ManifestImage, ImageLabel]]
    ) -> list[Sample]:
        slots = asyncio.Semaphore(self._concurrency)

        async def one(image: ManifestImage, label: ImageLabel) -> Sample:
            async with slots:
                try:
                    data = await self._objects.get_verified(
                        Bucket.IMAGES, image.key, sha256=image.sha256
                    )
                    return Sample(image, label, await asyncio.to_thread(measure, data))
                except (InvalidInputError, IntegrityError, NotFoundError) as exc:
                    return Sample(image, label, None, exc.message)

        return list(await asyncio.gather(*(one(image, label) for image, label in images)))

    async def _record(
        self, report: ValidationReport, split: Split, attempt: int, lease: Lease
    ) -> ReportRecord:
        """Write the attempt's split and reports once under its keys and complete the version's
        record with them, while the attempt holds its claim.

        Raises:
            ClaimLostError: another attempt took the claim over; nothing is recorded.
        """
        keys = report.keys
        lease.check()
        if report.passed:
            await self._objects.put_once(
                Bucket.DATASETS,
                keys.split,
                canonical_json(split.model_dump(mode="json")),
                content_type="application/json",
            )
        await self._objects.put_once(
            Bucket.DATASETS,
            keys.report,
            json.dumps(report.model_dump(mode="json"), sort_keys=True, indent=2).encode(),
            content_type="application/json",
        )
        await self._objects.put_once(
            Bucket.DATASETS,
            keys.report_html,
            render_html(report).encode(),
            content_type="text/html; charset=utf-8",
        )
        record = ReportRecord.of(report)
        lease.check()
        if not await self._store.complete_report(record, attempt):
            raise ClaimLostError(f"{record.id} attempt {attempt}: the claim was taken over")
        return record

    async def _publish(self, record: ReportRecord) -> bytes:
        """Copy the recorded split and reports to the version's fixed keys (see the module
        docstring); the recorded JSON report. A record from before attempts were kept apart
        names those keys already."""
        fixed = report_keys(record.dataset_id, record.version)
        if record.split_key is not None:
            await self._copy(record.split_key, fixed.split, "application/json")
        await self._copy(record.report_html_key, fixed.report_html, "text/html; charset=utf-8")
        return await self._copy(record.report_key, fixed.report, "application/json")

    async def _copy(self, recorded: str, fixed: str, content_type: str) -> bytes:
        data = await self._objects.get_verified(Bucket.DATASETS, recorded)
        if recorded != fixed:
            await self._objects.put_named(Bucket.DATASETS, fixed, data, content_type=content_type)
        return data

    async def _announce(self, record: ReportRecord, cause: DatasetLabeled) -> None:
        if record.passed and record.dataset_digest is not None and record.split_key is not None:
            await self._emit(
                DatasetValidated,
                DatasetValidatedPayload(
                    dataset_id=record.dataset_id,
                    version=record.version,
                    dataset_digest=record.dataset_digest,
                    split_key=record.split_key,
                    split_counts=SplitCounts.model_validate(record.split_counts),
                    report_key=record.report_key,
                    report_html_key=record.report_html_key,
                ),
                cause=cause,
            )
            return
        await self._emit(
            DatasetRejected,
            DatasetRejectedPayload(
                dataset_id=record.dataset_id,
                version=record.version,
                failures=[a for a in record.assertions if not a.passed],
                report_key=record.report_key,
            ),
            cause=cause,
        )


__all__ = [
    "ValidationService",
    "analyse",
    "digest_rows",
    "labeled_images",
    "report_attempt",
    "report_keys",
]
