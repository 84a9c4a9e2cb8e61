"""The registry's domain logic: approved candidates become served versions, and operators move
``production`` between them.

An approval is numbered (the next version of its model, one version per training run) and put
where Triton serves it (``placement``: exported into Triton's model repository, loaded, checked
by one real inference, its Triton files kept in object storage). Only then is the ``production``
alias moved to it and ``model.deployed`` emitted. A version that cannot load or answer is marked
failed and taken out of the repository; the alias, and what Triton serves, stay as they were.

Every move of the alias is announced without fail (issue 18): its ``model.deployed`` or
``model.rolled_back`` is queued in the alias document's outbox by the very update that moves it,
published at once, and, when Kafka refused it or the caller went away meanwhile, published by the
service's outbox relay (:mod:`screwops_bus.outbox`) once Kafka answers. The move is numbered by
that update (the alias's ``sequence``, one more per move) and the event carries the number, so
gateways apply moves in the registry's order whatever order they arrive in. An operator's move is
named by its request id: a retried call finds the move its first attempt made and answers it
instead of moving again, and ``expect_version`` refuses a move from a version the operator did
not see.

A version keeps the threshold, kind and frame size its approval carries (the trainer chose the
threshold on validation data, the evaluator judged the model at it), and every ``model.deployed``
and ``model.rolled_back`` names those of the version it puts in production: the gateway decides
with that threshold and fits images to that frame size. A version of frame size 0 (exported
before models took full frames) is failed instead of placed, saying it must be retrained.

Triton serves every version in the repository (see ``screwops_serving.repository``) and the
gateway pins the version the latest event names, so promoting or rolling back to a version still
in the repository only moves the alias: it takes effect as soon as the event arrives. Only the
newest ``keep_versions``, the production version and the one a rollback would return to stay in
the repository; a version evicted from it comes back from object storage when it is needed.

Besides ``production`` a model has other aliases, which never change what is served:
``candidate`` and the ones operators name (:meth:`RegistryService.set_alias`). Their moves are
numbered, recorded with who, why and when, and announced as ``model.alias_moved`` through the
same outbox. Where a model's release policy is manual, an approval is placed nowhere: it only
becomes ``candidate`` (the evaluator approved it), and an operator releases it (announced as
``model.released``, then deployed as a promotion is) or refuses it; either clears ``candidate``.
``production`` is moved by deployments, promotions and rollbacks only, so that every move of it
is announced to the gateways as ``model.deployed`` or ``model.rolled_back``; the alias API refuses
it.

Where a model's rollout policy is canary or shadow, a version going to production (approved
under the auto release policy, released under the manual one, or started by an operator) is put
where Triton serves it beside production and a rollout starts instead of production moving: the
gateways send it a share of the requests (canary) or a copy of them (shadow), step by step as the
rollout advances, from the rollout's announcements (``model.rollout_changed``). Its state lives
in production's alias document and every change of it is numbered from production's sequence and
queued in its outbox by the update that makes it, so the gateways order rollout changes and
production's moves by one number. Advancing past the last step completes it: production moves
to the candidate (``model.deployed``, sequence n) and the rollout is announced ``completed``
(n + 1), both in one update. An abort announces ``aborted`` and takes the candidate out of Triton
unless an alias needs it; production stays. One rollout at a time per model: while one runs,
production is moved by it only (promote, rollback and a second rollout are refused, an approval
is only registered).

Nothing here imports a broker, driver or gRPC: the store, the placement (over the object store
and Triton) and the bus come in from outside.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from screwops_bus import Announcement, Publish, announce_now
from screwops_contracts import (
    Event,
    ModelAliasMoved,
    ModelAliasMovedPayload,
    ModelApproved,
    ModelDeployed,
    ModelDeployedPayload,
    ModelRejected,
    ModelReleased,
    ModelReleasedPayload,
    ModelRolledBack,
    ModelRolledBackPayload,
    ModelRolloutChanged,
    ModelRolloutChangedPayload,
    ServedVersion,
)
from screwops_contracts.limits import MAX_ID_CHARS
from screwops_contracts.models import CANDIDATE_ALIAS, PRODUCTION_ALIAS, frame_size_problem
from screwops_errors import (
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ScrewOpsError,
    TransientError,
    UnavailableError,
)
from screwops_telemetry import traceparent

from screwops_registry.config import (
    DEFAULT_ALIAS_LIMIT,
    ReleasePolicies,
    ReleasePolicy,
    RolloutPolicies,
    RolloutPolicy,
    RolloutStrategy,
)
from screwops_registry.placement import Placement
from screwops_registry.store import (
    Alias,
    AliasMove,
    MoveKind,
    RegistryStore,
    Rejection,
    Rollout,
    RolloutChange,
    RolloutChangeKind,
    RolloutState,
    VersionRecord,
    VersionStatus,
    version_id,
)

log = logging.getLogger("screwops.registry")

# Registrations of one model racing for a number: each loser retries with the next one.
ALLOCATION_ATTEMPTS = 20
# Operators moving the alias while an approval deploys: the approval re-reads it and moves again.
MOVE_ATTEMPTS = 5
# An alias's name: a word a person types on the command line and reads on a page.
ALIAS_NAME = re.compile(rf"[a-z][a-z0-9_-]{{0,{MAX_ID_CHARS - 1}}}")


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


@dataclass(frozen=True)
class RolloutAnswer:
    """A rollout as a request left it, and the change the request made."""

    model_name: str
    rollout: Rollout
    change: RolloutChange


# What an operator (or the controller) may ask of a running rollout; advancing past the last
# step completes it.
REQUESTABLE = (
    RolloutChangeKind.ADVANCED,
    RolloutChangeKind.PAUSED,
    RolloutChangeKind.RESUMED,
    RolloutChangeKind.ABORTED,
)


class RegistryService:
    """Registers, deploys, promotes and rolls back model versions (see the module docstring)."""

    def __init__(
        self,
        store: RegistryStore,
        placement: Placement,
        publish: Publish,
        *,
        producer: str = "registry",
        policies: ReleasePolicies | None = None,
        rollouts: RolloutPolicies | None = None,
        alias_limit: int = DEFAULT_ALIAS_LIMIT,
    ) -> None:
        self._store = store
        self._placement = placement
        self._publish = publish
        self._producer = producer
        self._policies = policies or ReleasePolicies()
        self._rollouts = rollouts or RolloutPolicies()
        self._alias_limit = alias_limit
        # Triton loads a model as a whole: one repository change per model at a time in this
        # process. Across processes the alias's compare-and-set keeps the alias consistent.
        self._locks: dict[str, asyncio.Lock] = {}

    # --- events ----------------------------------------------------------------------------

    async def on_approved(self, event: ModelApproved) -> None:
        """Register the approved candidate and deploy it as ``production`` if it serves (or,
        under a manual release policy, only name it ``candidate``; under a canary or shadow
        rollout policy, start its rollout beside production).

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
                await self._announce_again(alias, self._event(record, done, cause=event))
                return
            if alias is not None and alias.rollout and alias.rollout.cause == str(event.event_id):
                log.info("%s was rolled out by this approval before", record.id)
                return
            if alias is not None and alias.version == record.version:
                log.info("%s is production already; nothing to deploy", record.id)
                return
            if record.status is VersionStatus.FAILED:
                log.warning(
                    "%s failed before (%s); not deploying", record.id, record.failure_reason
                )
                await self._placement.discard(name, record.version)
                return
            if self._policies.of(name) is ReleasePolicy.MANUAL:
                await self._nominate(record, event)
                return
            if alias is not None and (running := alias.rolling_out) is not None:
                log.error(
                    "not deploying %s: rollout %s of version %s is %s; start its rollout or "
                    "promote it once that one ends",
                    record.id,
                    running.id,
                    running.candidate,
                    running.state,
                )
                return
            try:
                await self._bring_up(record)
            except FailedPreconditionError as failure:
                log.error("not deploying %s: %s", record.id, failure.message)
                return
            policy = self._rollouts.of(name)
            if alias is not None and policy.strategy is not RolloutStrategy.IMMEDIATE:
                await self._roll_out_approval(record, policy, event)
                return
            announcement = await self._deploy_alias(record, event)
            await self._store.set_status(name, record.version, VersionStatus.DEPLOYED)
            await self._announce(name, announcement)
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
        be new: the production version, the rollback target and a running rollout's candidate
        of each model are put back from object storage where missing, loaded and checked. A
        version that cannot be served is logged; the others are still restored.
        """
        for alias in await self._store.aliases(PRODUCTION_ALIAS):
            for version in _served(alias):
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
        """The production, rollback and rollout candidate versions Triton does not report ready
        and could serve.

        A version exported before models took frames can never be served again (its restore
        says so once, at start); counting it as lost would retry and log it every round.
        """
        lost = []
        for alias in await self._store.aliases(PRODUCTION_ALIAS):
            for version in _served(alias):
                if await self._placement.ready(alias.model_name, version):
                    continue
                record = await self._store.get_version(alias.model_name, version)
                if record is not None and frame_size_problem(record.frame_size) is None:
                    lost.append(version_id(alias.model_name, version))
        return lost

    # --- operators -------------------------------------------------------------------------

    async def promote(
        self,
        model_name: str,
        version: int,
        *,
        actor: str,
        reason: str,
        request_id: str,
        expect_version: int | None = None,
    ) -> AliasChange:
        """Point ``production`` at ``version`` once Triton serves it, and announce it.

        A call whose ``request_id`` moved the alias before (a retry) answers that move and moves
        nothing. Promoting the version production already names changes nothing and announces
        its latest move again.

        Raises:
            InvalidInputError: no actor, reason or request id.
            NotFoundError: no such model version.
            FailedPreconditionError: production does not name ``expect_version``; the version
                failed or cannot be served; it waits for an operator's release; a rollout runs;
                the alias moved meanwhile.
        """
        _require_who(actor, reason, request_id)
        record = await self._version(model_name, version)
        alias = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
        if alias is not None and (done := alias.made_by(request_id)) is not None:
            return AliasChange(model_name, PRODUCTION_ALIAS, done)
        _expect(model_name, alias, expect_version)
        _require_no_rollout(model_name, alias)
        if alias is not None and alias.version == version and alias.history:
            await self._announce_again(alias, self._event(record, alias.history[-1]))
            return AliasChange(model_name, PRODUCTION_ALIAS, alias.history[-1])
        await self._require_released(model_name, version)
        placed = await self._ensure_serving(record)
        move = await self._move(
            model_name,
            alias,
            record,
            _next_move(
                alias, version, MoveKind.PROMOTE, actor=actor, reason=reason, request_id=request_id
            ),
        )
        if record.status is not VersionStatus.DEPLOYED:
            await self._store.set_status(model_name, version, VersionStatus.DEPLOYED)
        if placed:
            async with self._lock(model_name):
                await self._evict(model_name)
        return AliasChange(model_name, PRODUCTION_ALIAS, move)

    async def rollback(
        self,
        model_name: str,
        *,
        actor: str,
        reason: str,
        request_id: str,
        expect_version: int | None = None,
    ) -> AliasChange:
        """Point ``production`` back at the version served before the latest promotion.

        That version is normally still loaded, so only the alias moves and ``model.rolled_back``
        is published: the gateway switches as soon as the event arrives. A call whose
        ``request_id`` moved the alias before (a retry) answers that move and rolls back nothing.

        Raises:
            InvalidInputError: no actor, reason or request id.
            NotFoundError: no such model.
            FailedPreconditionError: production does not name ``expect_version``; no production
                version, or none served before it; the version to return to cannot be served;
                a rollout runs (abort it: production never left); the alias moved meanwhile.
        """
        _require_who(actor, reason, request_id)
        alias = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
        if alias is not None and (done := alias.made_by(request_id)) is not None:
            return AliasChange(model_name, PRODUCTION_ALIAS, done)
        if alias is None:
            if await self._store.latest_version(model_name) == 0:
                raise NotFoundError(f"no model named {model_name!r}")
            raise FailedPreconditionError(f"{model_name} has no production version")
        _expect(model_name, alias, expect_version)
        _require_no_rollout(model_name, alias)
        target = alias.rollback_target()
        if target is None:
            raise FailedPreconditionError(
                f"{model_name} version {alias.version} is the first served; "
                "there is no earlier version to roll back to"
            )
        record = await self._version(model_name, target)
        placed = await self._ensure_serving(record)
        move = await self._move(
            model_name,
            alias,
            record,
            _next_move(
                alias, target, MoveKind.ROLLBACK, actor=actor, reason=reason, request_id=request_id
            ),
        )
        if placed:
            async with self._lock(model_name):
                await self._evict(model_name)
        return AliasChange(model_name, PRODUCTION_ALIAS, move)

    # --- the other aliases -----------------------------------------------------------------

    async def set_alias(
        self,
        model_name: str,
        alias: str,
        version: int,
        *,
        actor: str,
        reason: str,
        request_id: str,
    ) -> AliasChange:
        """Point an alias other than ``production`` at a version, and announce it.

        Raises:
            InvalidInputError: no actor, reason or request id; a malformed alias name, or
                ``production`` (promote moves it).
            NotFoundError: no such model version.
            FailedPreconditionError: the version failed; the model has as many aliases of the
                operators' as it may; the alias moved meanwhile.
        """
        _require_who(actor, reason, request_id)
        _require_alias(alias)
        record = await self._version(model_name, version)
        if record.status is VersionStatus.FAILED:
            raise FailedPreconditionError(f"{record.id} failed: {record.failure_reason}")
        current = await self._store.get_alias(model_name, alias)
        if current is not None and (done := current.made_by(request_id)) is not None:
            return AliasChange(model_name, alias, done)
        if alias != CANDIDATE_ALIAS and (current is None or current.version is None):
            named = [
                a
                for a in await self._store.model_aliases(model_name)
                if a.version is not None and a.name not in (PRODUCTION_ALIAS, CANDIDATE_ALIAS)
            ]
            if len(named) >= self._alias_limit:
                raise FailedPreconditionError(
                    f"{model_name} has {len(named)} aliases, as many as it may "
                    f"(SCREWOPS_REGISTRY_ALIAS_LIMIT); unset one first"
                )
        return await self._move_other(
            model_name, alias, current, version, MoveKind.SET, actor, reason, request_id
        )

    async def unset_alias(
        self, model_name: str, alias: str, *, actor: str, reason: str, request_id: str
    ) -> AliasChange:
        """Make an alias other than ``production`` name no version; its history stays.

        Raises:
            InvalidInputError: as :meth:`set_alias`.
            NotFoundError: the model has no such alias.
            FailedPreconditionError: the alias moved meanwhile.
        """
        _require_who(actor, reason, request_id)
        _require_alias(alias)
        current = await self._store.get_alias(model_name, alias)
        if current is None:
            raise NotFoundError(f"{model_name} has no alias {alias!r}")
        if (done := current.made_by(request_id)) is not None:
            return AliasChange(model_name, alias, done)
        return await self._move_other(
            model_name, alias, current, None, MoveKind.UNSET, actor, reason, request_id
        )

    async def aliases(self, model_name: str) -> list[Alias]:
        """The model's aliases: ``production``, ``candidate``, then the others by name.

        Raises:
            NotFoundError: the model has no versions at all.
        """
        if await self._store.latest_version(model_name) == 0:
            raise NotFoundError(f"no model named {model_name!r}")
        order = {PRODUCTION_ALIAS: 0, CANDIDATE_ALIAS: 1}
        found = await self._store.model_aliases(model_name)
        return sorted(found, key=lambda a: (order.get(a.name, 2), a.name))

    async def release(
        self, model_name: str, version: int, *, actor: str, reason: str, request_id: str
    ) -> AliasChange:
        """Release the ``candidate`` version: clear ``candidate`` announcing ``model.released``
        (and the move, as ``model.alias_moved``), then deploy the version as :meth:`promote`
        does (production's move is the answer) or, where the model rolls out by canary or
        shadow and has a production version, start its rollout as :meth:`start_rollout` does
        (the candidate's release move is the answer).

        A retry with the same ``request_id`` finds the release made and goes on to the
        deployment, which it makes once too. A version that cannot be served is released all
        the same (the operator's word stands) and the deployment fails as a promotion would.

        Raises:
            InvalidInputError: no actor, reason or request id.
            NotFoundError: no such model version.
            FailedPreconditionError: ``candidate`` does not name the version; it cannot be
                served; a rollout runs; an alias moved meanwhile.
        """
        _require_who(actor, reason, request_id)
        record = await self._version(model_name, version)
        candidate = await self._store.get_alias(model_name, CANDIDATE_ALIAS)
        production = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
        released = candidate.made_by(request_id) if candidate is not None else None
        if released is None:
            _require_candidate(model_name, candidate, version)
            _require_no_rollout(model_name, production)
            made = await self._move_other(
                model_name,
                CANDIDATE_ALIAS,
                candidate,
                None,
                MoveKind.RELEASE,
                actor,
                reason,
                request_id,
                released=record,
            )
            released = made.move
        rolls_out = self._rollouts.of(model_name).strategy is not RolloutStrategy.IMMEDIATE
        if production is None or production.made_by(request_id) is not None or not rolls_out:
            return await self.promote(
                model_name, version, actor=actor, reason=reason, request_id=request_id
            )
        await self.start_rollout(
            model_name, version, actor=actor, reason=reason, request_id=request_id
        )
        return AliasChange(model_name, CANDIDATE_ALIAS, released)

    async def _require_released(self, model_name: str, version: int) -> None:
        """Under a manual policy the candidate waiting for release is served only through
        :meth:`release` (which clears ``candidate`` first): a promotion would serve it with no
        ``model.released`` and no release in its history."""
        if self._policies.of(model_name) is not ReleasePolicy.MANUAL:
            return
        candidate = await self._store.get_alias(model_name, CANDIDATE_ALIAS)
        if candidate is not None and candidate.version == version:
            raise FailedPreconditionError(
                f"{model_name} version {version} is the candidate waiting for release: release "
                "it (screwops models release) or refuse it"
            )

    async def refuse(
        self, model_name: str, version: int, *, actor: str, reason: str, request_id: str
    ) -> AliasChange:
        """Refuse the ``candidate`` version: clear ``candidate``, recording who refused it and
        why; nothing is deployed.

        Raises:
            InvalidInputError: no actor, reason or request id.
            NotFoundError: no such model version.
            FailedPreconditionError: ``candidate`` does not name the version; it moved meanwhile.
        """
        _require_who(actor, reason, request_id)
        await self._version(model_name, version)
        candidate = await self._store.get_alias(model_name, CANDIDATE_ALIAS)
        if candidate is not None and (done := candidate.made_by(request_id)) is not None:
            return AliasChange(model_name, CANDIDATE_ALIAS, done)
        _require_candidate(model_name, candidate, version)
        return await self._move_other(
            model_name,
            CANDIDATE_ALIAS,
            candidate,
            None,
            MoveKind.REFUSE,
            actor,
            reason,
            request_id,
        )

    # --- rollouts --------------------------------------------------------------------------

    async def rollout(self, model_name: str) -> Rollout:
        """The model's latest rollout, whatever its state.

        Raises:
            NotFoundError: the model has no versions, or never had a rollout.
        """
        alias = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
        return await self._latest_rollout(model_name, alias)

    async def start_rollout(
        self,
        model_name: str,
        version: int,
        *,
        actor: str,
        reason: str,
        request_id: str,
        strategy: RolloutStrategy | None = None,
    ) -> RolloutAnswer:
        """Put ``version`` where Triton serves it beside production and start its rollout, by
        ``strategy`` or else the model's policy, with the policy's steps, minimums and lines;
        announce ``started``. A call whose ``request_id`` started one before answers it.

        Raises:
            InvalidInputError: no actor, reason or request id; the strategy is immediate
                (promote it instead).
            NotFoundError: no such model version.
            FailedPreconditionError: no production version to compare it with; it is
                production; a rollout runs already; it waits for an operator's release; it
                failed or cannot be served; production moved meanwhile.
        """
        _require_who(actor, reason, request_id)
        record = await self._version(model_name, version)
        alias = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
        if (done := _answered(alias, request_id)) is not None:
            return done
        policy = self._rollouts.of(model_name)
        if strategy is not None:
            policy = policy.model_copy(update={"strategy": strategy})
        if policy.strategy is RolloutStrategy.IMMEDIATE:
            raise InvalidInputError(
                f"{model_name} goes to production immediately (SCREWOPS_REGISTRY_ROLLOUT): name "
                "a strategy, canary or shadow, or promote the version"
            )
        production = _rollable(model_name, alias, version)
        await self._require_released(model_name, version)
        await self._ensure_serving(record)
        answer = await self._start(
            record, production, policy, actor=actor, reason=reason, request_id=request_id
        )
        if answer is None:
            # A concurrent retry of the same request may have won: that is its answer.
            now = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
            if (done := _answered(now, request_id)) is not None:
                return done
            raise FailedPreconditionError(
                f"production of {model_name} moved meanwhile; read it again and retry"
            )
        return answer

    async def change_rollout(
        self,
        model_name: str,
        change: RolloutChangeKind,
        *,
        actor: str,
        reason: str,
        request_id: str,
        rollout_id: str = "",
        expect_step: int | None = None,
    ) -> RolloutAnswer:
        """Advance, pause, resume or abort the model's running rollout, and announce it.

        Advancing goes to the next step, whose minimum time counts from now, or, past the
        last, completes the rollout: production moves to the candidate (``model.deployed``)
        and the rollout is announced ``completed`` after it, both written by one update.
        Pausing sends the candidate nothing until resumed (the step's time counts again from
        the resumption); aborting sends it nothing for good and takes it out of Triton unless
        an alias needs it, production staying. A call whose ``request_id`` changed the rollout
        before (a retry) answers that change and changes nothing.

        Raises:
            InvalidInputError: no actor, reason or request id; a change nobody may ask for.
            NotFoundError: the model has no versions, or never had a rollout.
            FailedPreconditionError: the rollout is not ``rollout_id``, or not at
                ``expect_step``; it ended; it is paused (advance, pause) or running (resume);
                the candidate no longer answers (advance past the last step); it changed
                meanwhile.
        """
        _require_who(actor, reason, request_id)
        if change not in REQUESTABLE:
            raise InvalidInputError(f"a rollout is not {change} on request")
        alias = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
        rollout = await self._latest_rollout(model_name, alias)
        if (done := _answered(alias, request_id)) is not None:
            return done
        assert alias is not None  # it holds the rollout
        _require_state(model_name, rollout, change, rollout_id, expect_step)
        made, move = _requested(alias, rollout, change, actor, reason, request_id)
        if move is not None:
            # The candidate is to serve every request: it must answer first.
            await self._ensure_serving(await self._version(model_name, rollout.candidate))
        changed = _changed(rollout, made)
        if not await self._write_rollout(alias, changed, move=move):
            now_alias = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
            if (done := _answered(now_alias, request_id)) is not None:
                return done
            raise FailedPreconditionError(
                f"rollout {rollout.id} of {model_name} changed meanwhile; read it again and retry"
            )
        log.info(
            "%s: rollout %s of %s version %s %s (step %s of %s, %s%%): %s",
            actor,
            rollout.id,
            model_name,
            rollout.candidate,
            made.kind,
            changed.step + 1,
            len(changed.steps),
            changed.share,
            reason,
        )
        if made.kind is RolloutChangeKind.ABORTED:
            await self._unload(model_name, rollout.candidate)
        elif made.kind is RolloutChangeKind.COMPLETED:
            await self._store.set_status(model_name, rollout.candidate, VersionStatus.DEPLOYED)
            async with self._lock(model_name):
                await self._evict(model_name)
        return RolloutAnswer(model_name, changed, made)

    # --- queries ---------------------------------------------------------------------------

    async def versions(self, model_name: str, *, offset: int, limit: int) -> list[VersionView]:
        """A page of the model's versions, newest first.

        Raises:
            NotFoundError: the model has no versions at all.
        """
        records = await self._store.list_versions(model_name, offset=offset, limit=limit)
        if not records and offset == 0:
            raise NotFoundError(f"no model named {model_name!r}")
        aliases = await self._store.model_aliases(model_name)
        return [_view(record, aliases) for record in records]

    async def lineage(self, model_name: str, version: int) -> VersionView:
        """One version with where it came from.

        Raises:
            NotFoundError: no such model version.
        """
        record = await self._version(model_name, version)
        return _view(record, await self._store.model_aliases(model_name))

    # --- the steps -------------------------------------------------------------------------

    async def _latest_rollout(self, model_name: str, alias: Alias | None) -> Rollout:
        if alias is None or alias.rollout is None:
            if await self._store.latest_version(model_name) == 0:
                raise NotFoundError(f"no model named {model_name!r}")
            raise NotFoundError(f"{model_name} never had a rollout")
        return alias.rollout

    async def _roll_out_approval(
        self, record: VersionRecord, policy: RolloutPolicy, event: ModelApproved
    ) -> None:
        """Start the rollout of the approved version (served already), re-reading production
        while operators move it; an approval arriving while another rollout runs is only
        registered (the caller holds the lock)."""
        name = record.model_name
        reason = f"approved by evaluation {event.payload.evaluation_id}"
        for _ in range(MOVE_ATTEMPTS):
            alias = await self._store.get_alias(name, PRODUCTION_ALIAS)
            try:
                production = _rollable(name, alias, record.version)
            except FailedPreconditionError as refused:
                log.error("not rolling out %s: %s", record.id, refused.message)
                return
            if await self._start(
                record, production, policy, actor=event.producer, reason=reason, cause=event
            ):
                return
        raise UnavailableError(f"production of {name} kept moving; retrying")

    async def _start(
        self,
        record: VersionRecord,
        production: Alias,
        policy: RolloutPolicy,
        *,
        actor: str,
        reason: str,
        request_id: str = "",
        cause: ModelApproved | None = None,
    ) -> RolloutAnswer | None:
        """Start the rollout of ``record``, which Triton serves, if production is still
        ``production``; the answer, or None when production changed first."""
        now, sequence = _now(), _next(production)
        assert production.version is not None  # production always names one
        started = RolloutChange(
            kind=RolloutChangeKind.STARTED,
            step=0,
            actor=actor,
            reason=reason,
            at=now,
            sequence=sequence,
            request_id=request_id,
        )
        rollout = Rollout(
            id=f"v{record.version}-{sequence}",
            strategy=policy.strategy,
            production=production.version,
            candidate=record.version,
            steps=policy.shares,
            lines=policy.lines,
            min_inspections=policy.min_inspections,
            min_step_seconds=policy.min_step_seconds,
            state=RolloutState.RUNNING,
            step=0,
            started_at=now,
            step_started_at=now,
            changes=(started,),
            cause=str(cause.event_id) if cause is not None else None,
        )
        if not await self._write_rollout(production, rollout, cause=cause):
            return None
        if record.status is not VersionStatus.DEPLOYED:
            await self._store.set_status(record.model_name, record.version, VersionStatus.DEPLOYED)
        log.info(
            "%s: %s rollout %s of %s beside production version %s, steps %s: %s",
            actor,
            rollout.strategy,
            rollout.id,
            record.id,
            rollout.production,
            list(rollout.steps),
            reason,
        )
        return RolloutAnswer(record.model_name, rollout, started)

    async def _write_rollout(
        self,
        alias: Alias,
        rollout: Rollout,
        *,
        move: AliasMove | None = None,
        cause: ModelApproved | None = None,
    ) -> bool:
        """Write the rollout's latest change (with production's move, for a completion) and
        its announcements in one update of production, if it is still ``alias``, then publish
        them: the move's ``model.deployed`` first, then ``model.rollout_changed``. Whether it
        was written."""
        name = alias.model_name
        production = await self._version(name, rollout.production)
        candidate = await self._version(name, rollout.candidate)
        announcements = []
        if move is not None:
            announcements.append(Announcement(self._event(candidate, move), traceparent()))
        change = rollout.changes[-1]
        payload = ModelRolloutChangedPayload(
            model_name=name,
            rollout_id=rollout.id,
            change=change.kind.value,
            state=rollout.state.value,
            strategy=rollout.strategy.value,
            production=_served_version(production),
            candidate=_served_version(candidate),
            steps=list(rollout.steps),
            step=rollout.step,
            share=rollout.share,
            lines=list(rollout.lines),
            min_inspections=rollout.min_inspections,
            min_step_seconds=rollout.min_step_seconds,
            actor=change.actor,
            reason=change.reason,
            sequence=change.sequence,
        )
        event = (
            ModelRolloutChanged.caused_by(cause, payload, producer=self._producer)
            if cause is not None
            else ModelRolloutChanged.origin(
                payload, producer=self._producer, key=f"{name}/{rollout.id}/{change.sequence}"
            )
        )
        announcements.append(Announcement(event, traceparent()))
        if not await self._store.change_rollout(
            name, expected=alias, rollout=rollout, announcements=announcements, move=move
        ):
            return False
        for announcement in announcements:
            await self._announce(name, announcement)
        return True

    async def _unload(self, model_name: str, version: int) -> None:
        """Take an aborted rollout's candidate out of Triton, unless an alias names it or a
        rollback would return to it. Triton failing is logged: the abort stands, and the
        version goes with a later eviction."""
        aliases = await self._store.model_aliases(model_name)
        needed = {a.version for a in aliases} | {
            a.rollback_target() for a in aliases if a.name == PRODUCTION_ALIAS
        }
        if version in needed:
            log.info("%s version %s stays in Triton: an alias needs it", model_name, version)
            return
        try:
            async with self._lock(model_name):
                await self._placement.discard(model_name, version)
        except ScrewOpsError as error:
            log.warning(
                "%s version %s left in Triton after the abort: %s",
                model_name,
                version,
                error.message,
            )

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
                frame_size=approval.frame_size,
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
        if record.status is VersionStatus.DEPLOYED and await self._placement.ready(
            record.model_name, record.version
        ):
            await self._placement.check(record)
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
            await self._placement.bring_up(record)
        except PermanentError as error:
            if record.status is VersionStatus.REGISTERED:
                await self._fail(record, error.message)
            raise FailedPreconditionError(
                f"{record.id} cannot be served: {error.message}"
            ) from error

    async def _fail(self, record: VersionRecord, reason: str) -> None:
        log.error("%s cannot be served: %s", record.id, reason)
        await self._store.set_status(
            record.model_name, record.version, VersionStatus.FAILED, reason=reason
        )
        await self._placement.discard(record.model_name, record.version)

    async def _deploy_alias(self, record: VersionRecord, event: ModelApproved) -> Announcement:
        """Move production to the approved version, whatever it names by now; the move's
        announcement, pending in the alias's outbox."""
        for _ in range(MOVE_ATTEMPTS):
            alias = await self._store.get_alias(record.model_name, PRODUCTION_ALIAS)
            move = _next_move(
                alias,
                record.version,
                MoveKind.DEPLOY,
                actor=event.producer,
                reason=f"approved by evaluation {event.payload.evaluation_id}",
                cause=str(event.event_id),
            )
            announcement = Announcement(self._event(record, move, cause=event), traceparent())
            if await self._store.move_alias(
                record.model_name,
                PRODUCTION_ALIAS,
                expected=alias,
                move=move,
                announcements=[announcement],
            ):
                log.info("%s is production (was %s)", record.id, move.from_version)
                return announcement
        raise UnavailableError(f"production of {record.model_name} kept moving; retrying")

    async def _move(
        self, model_name: str, alias: Alias | None, record: VersionRecord, move: AliasMove
    ) -> AliasMove:
        """Make an operator's move and announce it; the move that stands for its request.

        Raises:
            FailedPreconditionError: someone else moved the alias since ``alias`` was read.
        """
        announcement = Announcement(self._event(record, move), traceparent())
        if not await self._store.move_alias(
            model_name, PRODUCTION_ALIAS, expected=alias, move=move, announcements=[announcement]
        ):
            # A concurrent retry of the same request may have won: that is its answer.
            now = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
            if now is not None and (done := now.made_by(move.request_id)) is not None:
                return done
            raise FailedPreconditionError(
                f"production of {model_name} moved meanwhile; read it again and retry"
            )
        await self._announce(model_name, announcement)
        log.info(
            "%s moved production of %s from %s to %s (%s): %s",
            move.actor,
            model_name,
            move.from_version,
            move.to_version,
            move.kind,
            move.reason,
        )
        return move

    async def _nominate(self, record: VersionRecord, event: ModelApproved) -> None:
        """Name the approved version ``candidate`` (manual release policy): nothing is placed
        or served until an operator releases it. A redelivered approval finds its move."""
        for _ in range(MOVE_ATTEMPTS):
            current = await self._store.get_alias(record.model_name, CANDIDATE_ALIAS)
            if current is not None and current.caused_by(str(event.event_id)) is not None:
                log.info("%s was made candidate by this approval before", record.id)
                return
            move = _next_move(
                current,
                record.version,
                MoveKind.NOMINATE,
                actor=event.producer,
                reason=f"approved by evaluation {event.payload.evaluation_id}; "
                "waits for an operator's release",
                cause=str(event.event_id),
            )
            if await self._record_other(record.model_name, CANDIDATE_ALIAS, current, move):
                log.info("%s is candidate, waiting for release", record.id)
                return
        raise UnavailableError(f"candidate of {record.model_name} kept moving; retrying")

    async def _move_other(
        self,
        model_name: str,
        alias: str,
        current: Alias | None,
        to_version: int | None,
        kind: MoveKind,
        actor: str,
        reason: str,
        request_id: str,
        *,
        released: VersionRecord | None = None,
    ) -> AliasChange:
        """Make an operator's move of an alias other than production and announce it (after
        ``model.released`` of ``released``, for a release); the move that stands for its
        request.

        Raises:
            FailedPreconditionError: someone else moved the alias since ``current`` was read.
        """
        move = _next_move(
            current, to_version, kind, actor=actor, reason=reason, request_id=request_id
        )
        if not await self._record_other(model_name, alias, current, move, released=released):
            now = await self._store.get_alias(model_name, alias)
            if now is not None and (done := now.made_by(request_id)) is not None:
                return AliasChange(model_name, alias, done)
            raise FailedPreconditionError(
                f"{alias} of {model_name} moved meanwhile; read it again and retry"
            )
        log.info(
            "%s moved %s of %s from %s to %s (%s): %s",
            actor,
            alias,
            model_name,
            move.from_version,
            to_version,
            kind,
            reason,
        )
        return AliasChange(model_name, alias, move)

    async def _record_other(
        self,
        model_name: str,
        alias: str,
        current: Alias | None,
        move: AliasMove,
        *,
        released: VersionRecord | None = None,
    ) -> bool:
        """Move the alias if it is still ``current``, queueing and then publishing its
        announcements; whether it moved."""
        key = f"{model_name}/{alias}/{move.sequence}"
        announcements = [
            Announcement(
                ModelAliasMoved.origin(
                    ModelAliasMovedPayload(
                        model_name=model_name,
                        alias=alias,
                        from_version=move.from_version,
                        to_version=move.to_version,
                        kind=move.kind.value,
                        actor=move.actor,
                        reason=move.reason,
                        sequence=move.sequence,
                    ),
                    producer=self._producer,
                    key=key,
                ),
                traceparent(),
            )
        ]
        if released is not None:
            event = ModelReleased.origin(
                ModelReleasedPayload(
                    model_name=model_name,
                    version=released.version,
                    run_id=released.run_id,
                    evaluation_id=released.evaluation_id,
                    actor=move.actor,
                    reason=move.reason,
                    sequence=move.sequence,
                ),
                producer=self._producer,
                key=key,
            )
            announcements.insert(0, Announcement(event, traceparent()))
        if not await self._store.move_alias(
            model_name, alias, expected=current, move=move, announcements=announcements
        ):
            return False
        for announcement in announcements:
            await self._announce(model_name, announcement, alias=alias)
        return True

    async def _announce(
        self, model_name: str, announcement: Announcement, *, alias: str = PRODUCTION_ALIAS
    ) -> None:
        """Publish a move's announcement at once and take it out of the outbox; when Kafka
        refuses it, the move stands all the same and the outbox relay publishes it later (a
        retried request finds the move made and would announce nothing)."""
        await announce_now(
            self._publish,
            announcement,
            lambda: self._store.announced(model_name, alias, announcement.id),
            subject=model_name,
        )

    async def _announce_again(self, alias: Alias, event: Event[Any]) -> None:
        """Announce a move made before (a promotion of the production version, a redelivered
        approval) as every move is announced: queued in the alias's outbox, then published
        within the at-once bound, the relay publishing it if Kafka refuses; a plain publish
        waited for Kafka as long as the producer held the send. Not queued when production
        moved meanwhile: that move's own announcement is the one that counts."""
        announcement = Announcement(event, traceparent())
        if await self._store.queue_announcement(
            alias.model_name, PRODUCTION_ALIAS, version=alias.version, announcement=announcement
        ):
            await self._announce(alias.model_name, announcement)

    def _event(
        self, record: VersionRecord, move: AliasMove, *, cause: ModelApproved | None = None
    ) -> Event[Any]:
        """The event announcing ``move``, with an id derived from the move (or from the
        approval it deploys), so announcing one move twice gives consumers one event."""
        if cause is not None:
            return ModelDeployed.caused_by(cause, _deployed(record, move), producer=self._producer)
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
                    frame_size=record.frame_size,
                    sequence=move.sequence,
                ),
                producer=self._producer,
                key=key,
            )
        else:
            event = ModelDeployed.origin(_deployed(record, move), producer=self._producer, key=key)
        return event

    async def _evict(self, model_name: str) -> None:
        """Keep the newest versions, production, the rollback target and a running rollout's
        candidate in the repository."""
        alias = await self._store.get_alias(model_name, PRODUCTION_ALIAS)
        await self._placement.evict(model_name, keep=_served(alias) if alias else [])


def _deployed(record: VersionRecord, move: AliasMove) -> ModelDeployedPayload:
    return ModelDeployedPayload(
        model_name=record.model_name,
        version=record.version,
        previous_version=move.from_version,
        triton_model=record.model_name,
        run_id=record.run_id,
        threshold=record.threshold,
        model_kind=record.model_kind,
        frame_size=record.frame_size,
        sequence=move.sequence,
    )


def _served_version(record: VersionRecord) -> ServedVersion:
    return ServedVersion(
        version=record.version,
        triton_model=record.model_name,
        threshold=record.threshold,
        model_kind=record.model_kind,
        frame_size=record.frame_size,
    )


def _served(alias: Alias) -> list[int]:
    """The versions of production's model Triton must keep serving: production, the version a
    rollback returns to, and a running rollout's candidate."""
    rollout = alias.rolling_out
    wanted = (
        alias.version,
        alias.rollback_target(),
        rollout.candidate if rollout is not None else None,
    )
    return [v for v in dict.fromkeys(wanted) if v is not None]


def _requested(
    alias: Alias,
    rollout: Rollout,
    change: RolloutChangeKind,
    actor: str,
    reason: str,
    request_id: str,
) -> tuple[RolloutChange, AliasMove | None]:
    """The change a request makes, numbered after production's latest; an advance past the
    last step is the completion, with production's move to the candidate numbered before it."""
    now, sequence = _now(), _next(alias)
    move = None
    step = rollout.step
    if change is RolloutChangeKind.ADVANCED and step + 1 == len(rollout.steps):
        change = RolloutChangeKind.COMPLETED
        move = AliasMove(
            from_version=alias.version,
            to_version=rollout.candidate,
            kind=MoveKind.ROLLOUT,
            actor=actor,
            reason=reason,
            at=now,
            sequence=sequence,
            request_id=request_id,
        )
        sequence += 1
    elif change is RolloutChangeKind.ADVANCED:
        step += 1
    made = RolloutChange(
        kind=change,
        step=step,
        actor=actor,
        reason=reason,
        at=now,
        sequence=sequence,
        request_id=request_id,
    )
    return made, move


def _changed(rollout: Rollout, change: RolloutChange) -> Rollout:
    """The rollout once ``change`` is made."""
    state = {
        RolloutChangeKind.ADVANCED: RolloutState.RUNNING,
        RolloutChangeKind.PAUSED: RolloutState.PAUSED,
        RolloutChangeKind.RESUMED: RolloutState.RUNNING,
        RolloutChangeKind.COMPLETED: RolloutState.COMPLETED,
        RolloutChangeKind.ABORTED: RolloutState.ABORTED,
    }[change.kind]
    restarts = change.kind in (RolloutChangeKind.ADVANCED, RolloutChangeKind.RESUMED)
    return replace(
        rollout,
        state=state,
        step=change.step,
        step_started_at=change.at if restarts else rollout.step_started_at,
        changes=(*rollout.changes, change),
    )


def _answered(alias: Alias | None, request_id: str) -> RolloutAnswer | None:
    """What request ``request_id`` did to the model's latest rollout, if it did (retries)."""
    rollout = alias.rollout if alias is not None else None
    done = rollout.made_by(request_id) if rollout is not None else None
    if alias is None or rollout is None or done is None:
        return None
    return RolloutAnswer(alias.model_name, rollout, done)


def _rollable(model_name: str, alias: Alias | None, version: int) -> Alias:
    """Production, where ``version`` may start a rollout beside it."""
    if alias is None:
        raise FailedPreconditionError(
            f"{model_name} has no production version to roll out beside: promote one first"
        )
    _require_no_rollout(model_name, alias)
    if alias.version == version:
        raise FailedPreconditionError(f"{model_name} version {version} is production already")
    return alias


def _require_no_rollout(model_name: str, alias: Alias | None) -> None:
    """Production is moved by nothing but a running rollout's completion, and one rollout runs
    at a time: its gateways' routing is one rollout's."""
    rollout = alias.rolling_out if alias is not None else None
    if rollout is not None:
        raise FailedPreconditionError(
            f"rollout {rollout.id} of {model_name} version {rollout.candidate} is "
            f"{rollout.state}: abort it (production never left version {rollout.production}) "
            "or let it complete first"
        )


def _require_state(
    model_name: str,
    rollout: Rollout,
    change: RolloutChangeKind,
    rollout_id: str,
    expect_step: int | None,
) -> None:
    if rollout_id and rollout.id != rollout_id:
        raise FailedPreconditionError(
            f"the latest rollout of {model_name} is {rollout.id}, not {rollout_id}"
        )
    if not rollout.active:
        raise FailedPreconditionError(
            f"rollout {rollout.id} of {model_name} is {rollout.state}; nothing runs"
        )
    if expect_step is not None and rollout.step != expect_step:
        raise FailedPreconditionError(
            f"rollout {rollout.id} of {model_name} is at step {rollout.step}, not {expect_step}"
        )
    needs = RolloutState.PAUSED if change is RolloutChangeKind.RESUMED else RolloutState.RUNNING
    if change is not RolloutChangeKind.ABORTED and rollout.state is not needs:
        raise FailedPreconditionError(
            f"rollout {rollout.id} of {model_name} is {rollout.state}: it cannot be {change}"
        )


def _next(alias: Alias | None) -> int:
    """The sequence number of the alias's next move."""
    return (alias.sequence if alias else 0) + 1


def _next_move(
    alias: Alias | None,
    to_version: int | None,
    kind: MoveKind,
    *,
    actor: str,
    reason: str,
    request_id: str = "",
    cause: str | None = None,
) -> AliasMove:
    """The alias's next move, now: from the version it names, numbered after its latest."""
    return AliasMove(
        from_version=alias.version if alias else None,
        to_version=to_version,
        kind=kind,
        actor=actor,
        reason=reason,
        at=_now(),
        cause=cause,
        sequence=_next(alias),
        request_id=request_id,
    )


def _expect(model_name: str, alias: Alias | None, expect_version: int | None) -> None:
    current = alias.version if alias else None
    if expect_version is not None and current != expect_version:
        raise FailedPreconditionError(
            f"production of {model_name} is version {current}, not {expect_version} as "
            "expected; read it again and retry"
        )


def _view(record: VersionRecord, aliases: list[Alias]) -> VersionView:
    names = tuple(a.name for a in aliases if a.version == record.version)
    production = PRODUCTION_ALIAS in names
    if record.status is VersionStatus.FAILED:
        stage = Stage.FAILED
    elif production:
        stage = Stage.PRODUCTION
    elif record.status is VersionStatus.DEPLOYED:
        stage = Stage.ARCHIVED
    else:
        stage = Stage.REGISTERED
    order = {PRODUCTION_ALIAS: 0, CANDIDATE_ALIAS: 1}
    return VersionView(record, stage, tuple(sorted(names, key=lambda n: (order.get(n, 2), n))))


def _require_alias(alias: str) -> None:
    if alias == PRODUCTION_ALIAS:
        raise InvalidInputError(
            "production is moved by promote and rollback only, so that the gateway follows it"
        )
    if not ALIAS_NAME.fullmatch(alias):
        raise InvalidInputError(
            f"alias {alias!r} is not a name: lower-case letters, digits, '-' and '_', starting "
            f"with a letter, at most {MAX_ID_CHARS} characters"
        )


def _require_candidate(model_name: str, candidate: Alias | None, version: int) -> None:
    named = candidate.version if candidate else None
    if named != version:
        raise FailedPreconditionError(
            f"{model_name} version {version} is not the candidate (candidate names "
            f"{'nothing' if named is None else f'version {named}'})"
        )


def _require_who(actor: str, reason: str, request_id: str) -> None:
    if not request_id.strip():
        raise InvalidInputError(
            "request_id is required: a retried move sends the first call's id again"
        )
    if not actor.strip():
        raise InvalidInputError("actor is required: who moves the alias is recorded")
    if not reason.strip():
        raise InvalidInputError("reason is required: why the alias moves is recorded")


def _now() -> datetime:
    """Now, at the millisecond precision MongoDB keeps, so a stored time reads back equal."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
