"""The registry's domain logic: approved candidates become served versions, and operators move
``production`` between them.

An approval is numbered (the next version of its model, one version per training run), its
SavedModel is exported into Triton's model repository as that version, Triton loads it, and one
real inference checks that it answers with a probability. Only then are its Triton files kept in
object storage (``triton/<name>/<N>/``, the repository's source of truth), the ``production`` alias
moved to it and ``model.deployed`` emitted. A version that cannot load or answer is marked failed
and taken out of the repository; the alias, and what Triton serves, stay as they were.

A version keeps the threshold and kind its approval carries (the trainer chose the threshold on
validation data, the evaluator judged the model at it), and every ``model.deployed`` and
``model.rolled_back`` names those of the version it puts in production: the gateway decides with
that threshold.

Triton serves every version in the repository (see ``screwops_serving.repository``) and the
gateway pins the version the latest event names, so promoting or rolling back to a version still
in the repository only moves the alias: it takes effect as soon as the event arrives. Only the
newest ``keep_versions``, the production version and the one a rollback would return to stay in
the repository; a version evicted from it comes back from object storage when it is needed.

Nothing here imports a broker, driver or gRPC: the store, the object store, Triton and the bus
come in as the interfaces below.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from screwops_bus import Emit, Publish
from screwops_contracts import (
    Event,
    ModelApproved,
    ModelDeployed,
    ModelDeployedPayload,
    ModelRejected,
    ModelRolledBack,
    ModelRolledBackPayload,
)
from screwops_contracts.datasets import Bucket
from screwops_contracts.models import PRODUCTION_ALIAS
from screwops_errors import (
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ScrewOpsError,
    TransientError,
    UnavailableError,
)
from screwops_serving import export_version, remove_version, restore_version, versions_present
from screwops_storage import StoredObject

from screwops_registry.store import (
    Alias,
    AliasMove,
    MoveKind,
    RegistryStore,
    Rejection,
    VersionRecord,
    VersionStatus,
    version_id,
)

log = logging.getLogger("screwops.registry")

TRITON_PREFIX = "triton"
# Registrations of one model racing for a number: each loser retries with the next one.
ALLOCATION_ATTEMPTS = 20
# Operators moving the alias while an approval deploys: the approval re-reads it and moves again.
MOVE_ATTEMPTS = 5


def triton_prefix(model_name: str, version: int) -> str:
    """Where a deployed version's Triton files are kept (bucket ``models``)."""
    return f"{TRITON_PREFIX}/{model_name}/{version}"


class Stage(StrEnum):
    """Where a version stands, from its status and the aliases naming it."""

    REGISTERED = "registered"
    PRODUCTION = "production"
    ARCHIVED = "archived"
    FAILED = "failed"


@dataclass(frozen=True)
class VersionView:
    """A version as the API shows it: its record, its stage and the aliases naming it."""

    record: VersionRecord
    stage: Stage
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class AliasChange:
    """One move of an alias, as the API reports it."""

    model_name: str
    alias: str
    move: AliasMove


class Objects(Protocol):
    """The part of :class:`screwops_storage.ObjectStore` the registry uses."""

    async def get_directory(self, bucket: str, prefix: str, root: Path) -> list[StoredObject]: ...

    async def put_directory(
        self, bucket: str, root: Path, *, prefix: str
    ) -> list[StoredObject]: ...


class Triton(Protocol):
    """The part of :class:`screwops_serving.TritonModels` the registry uses."""

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...

    async def ready(self, name: str, version: int | None = None) -> bool: ...

    async def check(self, name: str, version: int, *, timeout_s: float) -> float: ...


@dataclass(frozen=True)
class Deployment:
    """Where versions are served, how many stay there, and how they are checked."""

    repository: Path
    keep_versions: int = 3
    max_batch_size: int = 32
    queue_delay_us: int = 2000
    check_timeout_s: float = 30.0


class RegistryService:
    """Registers, deploys, promotes and rolls back model versions (see the module docstring)."""

    def __init__(
        self,
        store: RegistryStore,
        objects: Objects,
        triton: Triton,
        emit: Emit,
        publish: Publish,
        *,
        deployment: Deployment,
        producer: str = "registry",
    ) -> None:
        self._store = store
        self._objects = objects
        self._triton = triton
        self._emit = emit
        self._publish = publish
        self._deployment = deployment
        self._producer = producer
        # Triton loads a model as a whole: one repository change per model at a time in this
        # process. Across processes the alias's compare-and-set keeps the alias consistent.
        self._locks: dict[str, asyncio.Lock] = {}

    # --- events ----------------------------------------------------------------------------

    async def on_approved(self, event: ModelApproved) -> None:
        """Register the approved candidate and deploy it as ``production`` if it serves.

        A candidate that cannot be served is marked failed and nothing else changes: that is
        the event's outcome, not an error. Outages raise transient errors, so the bus retries;
        a retry, or a redelivery, finishes the work without a second version or alias move, and
        announces the deployment again only while it is still the latest move of production.
        """
        approval = event.payload
        name = approval.model_name
        async with self._lock(name):
            record = await self._register(event)
            alias = await self._store.get_alias(name, PRODUCTION_ALIAS)
            done = alias.caused_by(str(event.event_id)) if alias else None
            if alias is not None and done is not None:
                await self._store.set_status(name, record.version, VersionStatus.DEPLOYED)
                # Announcing a move that a later one replaced would send every gateway back to
                # a version that may no longer be served (a new consumer group re-reading the
                # topic's whole history, or a redelivery after an operator's rollback).
                if alias.history[-1] != done:
                    log.info(
                        "%s was deployed by this approval before and production has moved "
                        "since; not announcing it again",
                        record.id,
                    )
                    return
                log.info("%s was deployed by this approval before; announcing it", record.id)
                await self._emit(ModelDeployed, _deployed(record, done), cause=event)
                return
            if alias is not None and alias.version == record.version:
                log.info("%s is production already; nothing to deploy", record.id)
                return
            if record.status is VersionStatus.FAILED:
                log.warning(
                    "%s failed before (%s); not deploying", record.id, record.failure_reason
                )
                await self._discard(name, record.version)
                return
            try:
                await self._bring_up(record)
            except FailedPreconditionError as failure:
                log.error("not deploying %s: %s", record.id, failure.message)
                return
            move = await self._deploy_alias(record, event)
            await self._store.set_status(name, record.version, VersionStatus.DEPLOYED)
            await self._emit(ModelDeployed, _deployed(record, move), cause=event)
            await self._evict(name)

    async def on_rejected(self, event: ModelRejected) -> None:
        """Keep the rejected candidate for lineage: a run that never became a version."""
        rejected = event.payload
        await self._store.record_rejection(
            Rejection(
                model_name=rejected.model_name,
                run_id=rejected.run_id,
                evaluation_id=rejected.evaluation_id,
                metrics=dict(rejected.metrics),
                checks=list(rejected.checks),
                report_key=rejected.report_key,
                correlation_id=event.correlation_id,
                rejected_at=event.occurred_at,
            )
        )
        log.info("recorded the rejection of run %s of %s", rejected.run_id, rejected.model_name)

    async def restore(self) -> None:
        """Make Triton serve what every ``production`` alias needs, after a restart of either.

        Triton starts with nothing loaded (explicit model control), and a repository volume may
        be new: the production version and the rollback target of each model are put back from
        object storage where missing, loaded and checked. A version that cannot be served is
        logged; the others are still restored.
        """
        for alias in await self._store.aliases(PRODUCTION_ALIAS):
            for version in (alias.version, alias.rollback_target()):
                if version is None:
                    continue
                try:
                    await self._ensure_serving(await self._version(alias.model_name, version))
                except (FailedPreconditionError, NotFoundError) as failure:
                    log.error(
                        "cannot restore %s version %s: %s",
                        alias.model_name,
                        version,
                        failure.message,
                    )

    async def keep_serving(self, interval_s: float) -> None:
        """Every ``interval_s``, :meth:`restore` what Triton no longer serves; runs until
        cancelled.

        A Triton restarted under the registry comes back empty (explicit model control): nothing
        else would reload production, and the gateway would answer UNAVAILABLE until an operator
        acted. Triton or storage being away is logged and tried again next time.
        """
        while True:
            await asyncio.sleep(interval_s)
            try:
                if lost := await self._not_served():
                    log.warning("Triton no longer serves %s; restoring", ", ".join(lost))
                    await self.restore()
            except TransientError as error:
                log.warning("cannot check what Triton serves yet: %s", error.message)

    async def _not_served(self) -> list[str]:
        """The production and rollback versions Triton does not report ready."""
        lost = []
        for alias in await self._store.aliases(PRODUCTION_ALIAS):
            for version in (alias.version, alias.rollback_target()):
                if version is not None and not await self._triton.ready(alias.model_name, version):
                    lost.append(version_id(alias.model_name, version))
        return lost

    # --- operators -------------------------------------------------------------------------

    async def promote(
        self, model_name: str, version: int, *, actor: str, reason: str
    ) -> AliasChange:
        """Point ``production`` at ``version`` once Triton serves it, and announce it.

        Promoting the version production already names changes nothing and announces it again
        (so a retried call whose first attempt moved the alias still reaches the gateway).

        Raises:
            InvalidInputError: no actor or reason.
            NotFoundError: no such model version.
            FailedPreconditionError: the version failed or cannot be served, or the alias moved
                meanwhile.
        """
        _require_who(actor, reason)
        record = await self._version(model_name, version)
        alias = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
        if alias is not None and alias.version == version and alias.history:
            await self._announce(record, alias.history[-1])
            return AliasChange(model_name, PRODUCTION_ALIAS, alias.history[-1])
        placed = await self._ensure_serving(record)
        move = AliasMove(
            from_version=alias.version if alias else None,
            to_version=version,
            kind=MoveKind.PROMOTE,
            actor=actor,
            reason=reason,
            at=_now(),
        )
        await self._move(model_name, move)
        if record.status is not VersionStatus.DEPLOYED:
            await self._store.set_status(model_name, version, VersionStatus.DEPLOYED)
        await self._announce(record, move)
        if placed:
            async with self._lock(model_name):
                await self._evict(model_name)
        return AliasChange(model_name, PRODUCTION_ALIAS, move)

    async def rollback(self, model_name: str, *, actor: str, reason: str) -> AliasChange:
        """Point ``production`` back at the version served before the latest promotion.

        That version is normally still loaded, so only the alias moves and ``model.rolled_back``
        is published: the gateway switches as soon as the event arrives.

        Raises:
            InvalidInputError: no actor or reason.
            NotFoundError: no such model.
            FailedPreconditionError: no production version, or none served before it; the
                version to return to cannot be served; the alias moved meanwhile.
        """
        _require_who(actor, reason)
        alias = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
        if alias is None:
            if await self._store.latest_version(model_name) == 0:
                raise NotFoundError(f"no model named {model_name!r}")
            raise FailedPreconditionError(f"{model_name} has no production version")
        target = alias.rollback_target()
        if target is None:
            raise FailedPreconditionError(
                f"{model_name} version {alias.version} is the first served; "
                "there is no earlier version to roll back to"
            )
        record = await self._version(model_name, target)
        placed = await self._ensure_serving(record)
        move = AliasMove(
            from_version=alias.version,
            to_version=target,
            kind=MoveKind.ROLLBACK,
            actor=actor,
            reason=reason,
            at=_now(),
        )
        await self._move(model_name, move)
        await self._announce(record, move)
        if placed:
            async with self._lock(model_name):
                await self._evict(model_name)
        return AliasChange(model_name, PRODUCTION_ALIAS, move)

    # --- queries ---------------------------------------------------------------------------

    async def versions(self, model_name: str, *, offset: int, limit: int) -> list[VersionView]:
        """A page of the model's versions, newest first.

        Raises:
            NotFoundError: the model has no versions at all.
        """
        records = await self._store.list_versions(model_name, offset=offset, limit=limit)
        if not records and offset == 0:
            raise NotFoundError(f"no model named {model_name!r}")
        alias = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
        return [_view(record, alias) for record in records]

    async def lineage(self, model_name: str, version: int) -> VersionView:
        """One version with where it came from.

        Raises:
            NotFoundError: no such model version.
        """
        record = await self._version(model_name, version)
        return _view(record, await self._store.get_alias(model_name, PRODUCTION_ALIAS))

    # --- the steps -------------------------------------------------------------------------

    def _lock(self, model_name: str) -> asyncio.Lock:
        return self._locks.setdefault(model_name, asyncio.Lock())

    async def _version(self, model_name: str, version: int) -> VersionRecord:
        record = await self._store.get_version(model_name, version)
        if record is None:
            raise NotFoundError(f"{model_name} has no version {version}")
        return record

    async def _register(self, event: ModelApproved) -> VersionRecord:
        """The run's version: the one registered before, or the next number of the model."""
        approval = event.payload
        for _ in range(ALLOCATION_ATTEMPTS):
            existing = await self._store.version_for_run(approval.model_name, approval.run_id)
            if existing is not None:
                return existing
            record = VersionRecord(
                model_name=approval.model_name,
                version=await self._store.latest_version(approval.model_name) + 1,
                run_id=approval.run_id,
                evaluation_id=approval.evaluation_id,
                dataset_id=approval.dataset_id,
                dataset_version=approval.dataset_version,
                artifact_key=approval.artifact_key,
                metrics=dict(approval.metrics),
                checks=list(approval.checks),
                champion_version=approval.champion_version,
                report_key=approval.report_key,
                correlation_id=event.correlation_id,
                approved_by=event.producer,
                created_at=_now(),
                threshold=approval.threshold,
                model_kind=approval.model_kind,
            )
            if await self._store.create_version(record):
                log.info("registered %s from run %s", record.id, record.run_id)
                return record
        raise UnavailableError(
            f"could not number a version of {approval.model_name}: "
            f"{ALLOCATION_ATTEMPTS} registrations raced for it"
        )

    async def _ensure_serving(self, record: VersionRecord) -> bool:
        """Make sure Triton serves a version an operator asked for; True if it had to load it.

        The fast path (a deployed version still loaded) takes no lock and only checks it
        answers, which is what makes a rollback immediate.
        """
        if record.status is VersionStatus.DEPLOYED and await self._triton.ready(
            record.model_name, record.version
        ):
            await self._check(record)
            return False
        async with self._lock(record.model_name):
            await self._bring_up(record)
        return True

    async def _bring_up(self, record: VersionRecord) -> None:
        """Place the version in the repository, load it and check it (the caller holds the lock).

        Raises:
            FailedPreconditionError: it cannot be served. A version never served is marked
                failed and taken out of the repository; a deployed one is left as it is.
            TransientError: Triton or storage did not answer; nothing is marked.
        """
        if record.status is VersionStatus.FAILED:
            raise FailedPreconditionError(f"{record.id} failed: {record.failure_reason}")
        try:
            await self._place(record)
            await self._triton.load(record.model_name)
            await self._check(record)
            if record.status is VersionStatus.REGISTERED:
                await self._objects.put_directory(
                    Bucket.MODELS,
                    self._deployment.repository / record.model_name / str(record.version),
                    prefix=triton_prefix(record.model_name, record.version),
                )
        except PermanentError as error:
            if record.status is VersionStatus.REGISTERED:
                await self._fail(record, error.message)
            raise FailedPreconditionError(
                f"{record.id} cannot be served: {error.message}"
            ) from error

    async def _place(self, record: VersionRecord) -> None:
        """Put the version's files in Triton's repository.

        A version never served is exported afresh from its SavedModel (replacing whatever a
        crashed attempt left); a deployed one comes back, unchanged, from the copy kept when it
        was first checked, unless it is still there.
        """
        name, version = record.model_name, record.version
        repository = self._deployment.repository
        deployed = record.status is VersionStatus.DEPLOYED
        if deployed and version in await asyncio.to_thread(versions_present, repository, name=name):
            return
        place = functools.partial(
            restore_version if deployed else export_version,
            repository=repository,
            name=name,
            version=version,
            max_batch_size=self._deployment.max_batch_size,
            queue_delay_us=self._deployment.queue_delay_us,
        )
        source = triton_prefix(name, version) if deployed else record.artifact_key
        with tempfile.TemporaryDirectory(prefix="screwops-registry-") as scratch:
            await self._objects.get_directory(Bucket.MODELS, source, Path(scratch))
            await asyncio.to_thread(place, Path(scratch))

    async def _check(self, record: VersionRecord) -> None:
        """One real inference through Triton: readiness alone does not prove the version answers."""
        try:
            probability = await self._triton.check(
                record.model_name, record.version, timeout_s=self._deployment.check_timeout_s
            )
        except PermanentError as error:
            raise FailedPreconditionError(
                f"{record.id} failed its check: {error.message}"
            ) from error
        log.info("%s answered %.4f for a blank image", record.id, probability)

    async def _fail(self, record: VersionRecord, reason: str) -> None:
        log.error("%s cannot be served: %s", record.id, reason)
        await self._store.set_status(
            record.model_name, record.version, VersionStatus.FAILED, reason=reason
        )
        await self._discard(record.model_name, record.version)

    async def _discard(self, model_name: str, version: int) -> None:
        """Take a version out of the repository and reload: the versions left keep serving."""
        repository = self._deployment.repository
        if not await asyncio.to_thread(
            remove_version, repository, name=model_name, version=version
        ):
            return
        if await asyncio.to_thread(versions_present, repository, name=model_name):
            await self._triton.load(model_name)
        else:
            await self._triton.unload(model_name)

    async def _deploy_alias(self, record: VersionRecord, event: ModelApproved) -> AliasMove:
        """Move production to the approved version, whatever it names by now."""
        for _ in range(MOVE_ATTEMPTS):
            alias = await self._store.get_alias(record.model_name, PRODUCTION_ALIAS)
            move = AliasMove(
                from_version=alias.version if alias else None,
                to_version=record.version,
                kind=MoveKind.DEPLOY,
                actor=event.producer,
                reason=f"approved by evaluation {event.payload.evaluation_id}",
                at=_now(),
                cause=str(event.event_id),
            )
            if await self._store.move_alias(
                record.model_name, PRODUCTION_ALIAS, expected=move.from_version, move=move
            ):
                log.info("%s is production (was %s)", record.id, move.from_version)
                return move
        raise UnavailableError(f"production of {record.model_name} kept moving; retrying")

    async def _move(self, model_name: str, move: AliasMove) -> None:
        if not await self._store.move_alias(
            model_name, PRODUCTION_ALIAS, expected=move.from_version, move=move
        ):
            raise FailedPreconditionError(
                f"production of {model_name} moved meanwhile; read it again and retry"
            )
        log.info(
            "%s moved production of %s from %s to %s (%s): %s",
            move.actor,
            model_name,
            move.from_version,
            move.to_version,
            move.kind,
            move.reason,
        )

    async def _announce(self, record: VersionRecord, move: AliasMove) -> None:
        """Publish the event of an operator's move, with an id derived from the move, so
        announcing one move twice gives consumers one event."""
        key = f"{record.model_name}/{move.kind}/{move.to_version}/{move.at.isoformat()}"
        event: Event[Any]
        if move.kind is MoveKind.ROLLBACK and move.from_version is not None:
            event = ModelRolledBack.origin(
                ModelRolledBackPayload(
                    model_name=record.model_name,
                    from_version=move.from_version,
                    to_version=move.to_version,
                    triton_model=record.model_name,
                    actor=move.actor,
                    reason=move.reason,
                    threshold=record.threshold,
                    model_kind=record.model_kind,
                ),
                producer=self._producer,
                key=key,
            )
        else:
            event = ModelDeployed.origin(_deployed(record, move), producer=self._producer, key=key)
        await self._publish(event)

    async def _evict(self, model_name: str) -> None:
        """Keep the newest versions, production and the rollback target; remove the rest.

        Housekeeping: Triton keeps serving removed versions until the reload, and a failed
        reload is logged and done again after the next deployment, never failing a move.
        """
        repository = self._deployment.repository
        present = await asyncio.to_thread(versions_present, repository, name=model_name)
        keep = set(present[-self._deployment.keep_versions :])
        alias = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
        if alias is not None:
            keep.add(alias.version)
            target = alias.rollback_target()
            if target is not None:
                keep.add(target)
        stale = [version for version in present if version not in keep]
        if not stale:
            return
        for version in stale:
            await asyncio.to_thread(remove_version, repository, name=model_name, version=version)
        log.info("evicting versions %s of %s from Triton", stale, model_name)
        try:
            await self._triton.load(model_name)
        except ScrewOpsError as error:
            log.warning("reloading %s after eviction failed: %s", model_name, error.message)


def _deployed(record: VersionRecord, move: AliasMove) -> ModelDeployedPayload:
    return ModelDeployedPayload(
        model_name=record.model_name,
        version=record.version,
        previous_version=move.from_version,
        triton_model=record.model_name,
        run_id=record.run_id,
        threshold=record.threshold,
        model_kind=record.model_kind,
    )


def _view(record: VersionRecord, alias: Alias | None) -> VersionView:
    production = alias is not None and alias.version == record.version
    if record.status is VersionStatus.FAILED:
        stage = Stage.FAILED
    elif production:
        stage = Stage.PRODUCTION
    elif record.status is VersionStatus.DEPLOYED:
        stage = Stage.ARCHIVED
    else:
        stage = Stage.REGISTERED
    return VersionView(record, stage, (PRODUCTION_ALIAS,) if production else ())


def _require_who(actor: str, reason: str) -> None:
    if not actor.strip():
        raise InvalidInputError("actor is required: who moves the alias is recorded")
    if not reason.strip():
        raise InvalidInputError("reason is required: why the alias moves is recorded")


def _now() -> datetime:
    """Now, at the millisecond precision MongoDB keeps, so a stored time reads back equal."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
