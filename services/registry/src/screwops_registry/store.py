"""The registry's metadata: model versions with their lineage, aliases with their history, and
the candidates the evaluator rejected.

The registry owns these collections; no other service reads them.

* ``model_versions`` — one document per registered version, ``_id`` ``<name>@v<N>``. Unique
  indexes on (model_name, version) and (model_name, run_id) make version numbers safe without
  transactions (two registrations racing for one number: one insert fails and retries with the
  next) and an approval idempotent (a redelivered one finds its run's version).
* ``aliases`` — one document per alias (``production``, ``candidate`` and the ones operators name),
  ``_id`` ``<name>:<alias>``, naming a version (or none, once unset) and holding
  its newest moves (from, to, kind, actor, reason, at, cause, sequence, request id; as many as
  ``alias_history_limit``, so the document stays bounded), the number of
  its latest move (``sequence``) and, in its ``outbox``, the announcements of its moves that Kafka
  has not acknowledged yet (:mod:`screwops_bus.outbox`). A move is one compare-and-set on the
  version and the sequence it replaces that also numbers it and queues its announcement, so two
  movers never both win and no move goes unannounced (on FerretDB v1, whose updates are not
  atomic, because the one registry process writes one alias at a time). ``production``'s
  document also holds the model's latest rollout (a canary or shadow of a candidate beside
  production, its state and its changes): each change is the same compare-and-set, numbered
  from the same ``sequence``, so the gateways order rollout changes and production's moves by
  one number, and a rollout's completion moves production and finishes the rollout in one
  update.
* ``rejections`` — one document per rejected evaluation, ``_id`` ``<name>:<evaluation_id>``.

:class:`RegistryStore` is the interface (each method's contract and errors are documented there,
as in MLflow's ``AbstractStore``); :class:`MongoRegistryStore` implements it on motor for FerretDB
v1 and MongoDB alike; the unit tests use an in-memory fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorDatabase
from screwops_bus import OUTBOX, PENDING, Announcement, mark_sent, pending_in, pending_index
from screwops_contracts import AssertionResult
from screwops_contracts.models import DEFAULT_THRESHOLD, NO_FRAME_SIZE, PRODUCTION_ALIAS, ModelKind
from screwops_errors import AlreadyExistsError, NotFoundError
from screwops_storage import IndexSpec, StoredObject, ensure_indexes, mongo_errors

from screwops_registry.config import DEFAULT_HISTORY_LIMIT, RolloutStrategy

ALIASES = "aliases"
OUTBOXES = (ALIASES,)
"""The collections whose documents hold announcements (see :mod:`screwops_bus.outbox`)."""

INDEXES = (
    IndexSpec("model_versions", (("model_name", 1), ("version", 1)), unique=True),
    IndexSpec("model_versions", (("model_name", 1), ("run_id", 1)), unique=True),
    IndexSpec("aliases", (("alias", 1),)),
    IndexSpec("aliases", (("model_name", 1),)),
    IndexSpec("rejections", (("model_name", 1), ("rejected_at", 1))),
    pending_index(ALIASES),
)


class VersionStatus(StrEnum):
    """A version's fate in Triton (its stage also depends on the aliases naming it)."""

    REGISTERED = "registered"  # approved and numbered; never served yet
    DEPLOYED = "deployed"  # loaded, checked, its files kept in object storage, served at least once
    FAILED = "failed"  # could not be loaded or failed its check; never served


class MoveKind(StrEnum):
    """Why an alias moved."""

    DEPLOY = "deploy"  # an approval was deployed
    PROMOTE = "promote"  # an operator promoted a version
    ROLLBACK = "rollback"  # an operator rolled back
    # Moves of the other aliases (never of production):
    SET = "set"  # an operator pointed an alias at a version
    UNSET = "unset"  # an operator made it name none
    NOMINATE = "nominate"  # an approval became candidate (manual release policy)
    RELEASE = "release"  # an operator released the candidate, which clears it
    REFUSE = "refuse"  # an operator refused the candidate, which clears it
    ROLLOUT = "rollout"  # a canary or shadow completed: its candidate is production


@dataclass(frozen=True)
class VersionRecord:
    """One registered version of a model and where it came from."""

    model_name: str
    version: int
    run_id: str
    evaluation_id: str
    dataset_id: str
    dataset_version: int
    artifact_key: str
    metrics: dict[str, float]
    checks: list[AssertionResult]
    champion_version: int | None
    report_key: str
    correlation_id: str
    approved_by: str
    created_at: datetime
    status: VersionStatus = VersionStatus.REGISTERED
    failure_reason: str = ""
    # The operating point the version was approved at and is served at (0.5 and supervised
    # for versions registered before thresholds were chosen per run).
    threshold: float = DEFAULT_THRESHOLD
    model_kind: ModelKind = ModelKind.SUPERVISED
    # The side of the frames it takes (NO_FRAME_SIZE for versions registered before models took
    # full frames: they are never deployed, and must be retrained).
    frame_size: int = NO_FRAME_SIZE

    @property
    def id(self) -> str:
        return version_id(self.model_name, self.version)


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias, kept in its history while it is among the newest moves."""

    from_version: int | None
    to_version: int | None
    """None when the move unset the alias (never for production)."""
    kind: MoveKind
    actor: str
    reason: str
    at: datetime
    cause: str | None = None  # event_id of the approval that a DEPLOY move deployed
    sequence: int = 0
    """The alias's move number: one more than the move before (0 for moves recorded before
    moves were numbered)."""
    request_id: str = ""
    """The operator's request that made the move, so a retry of it finds it (empty for
    deployments and moves recorded before requests were named)."""


class RolloutState(StrEnum):
    """Where a rollout stands."""

    RUNNING = "running"  # the candidate gets its step's share
    PAUSED = "paused"  # it gets nothing until resumed; still loaded
    COMPLETED = "completed"  # it is production
    ABORTED = "aborted"  # production stayed; it gets nothing


class RolloutChangeKind(StrEnum):
    """What changed a rollout (the values are model.rollout_changed's ``change``)."""

    STARTED = "started"
    ADVANCED = "advanced"
    PAUSED = "paused"
    RESUMED = "resumed"
    COMPLETED = "completed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class RolloutChange:
    """One change of a rollout, kept while it is among its newest changes."""

    kind: RolloutChangeKind
    step: int
    """The step the rollout is at after the change."""
    actor: str
    reason: str
    at: datetime
    sequence: int
    """Its number, from the same counter as production's moves."""
    request_id: str = ""
    """The request that made it, so a retry finds it (empty for an approval's start)."""


@dataclass(frozen=True)
class Rollout:
    """A canary or shadow of ``candidate`` beside ``production``, with its settings fixed at its
    start and the changes it went through."""

    id: str
    strategy: RolloutStrategy
    production: int
    candidate: int
    steps: tuple[float, ...]
    lines: tuple[str, ...]
    min_inspections: int
    min_step_seconds: float
    state: RolloutState
    step: int
    started_at: datetime
    step_started_at: datetime
    """When the current step began (the controller's minimum time counts from it)."""
    changes: tuple[RolloutChange, ...]
    cause: str | None = None
    """event_id of the approval that started it, so a redelivery starts nothing."""

    @property
    def active(self) -> bool:
        """Whether it still holds the candidate beside production (running or paused)."""
        return self.state in (RolloutState.RUNNING, RolloutState.PAUSED)

    @property
    def share(self) -> float:
        """Percent of the requests the candidate gets now: none unless running."""
        return self.steps[self.step] if self.state is RolloutState.RUNNING else 0.0

    @property
    def sequence(self) -> int:
        return self.changes[-1].sequence

    def made_by(self, request_id: str) -> RolloutChange | None:
        """The change operator request ``request_id`` made, if it made one (retries)."""
        return next((c for c in self.changes if request_id and c.request_id == request_id), None)


@dataclass(frozen=True)
class Alias:
    """An alias of a model: the version it names (None once unset; production always names
    one) and how it got there."""

    model_name: str
    name: str
    version: int | None
    history: tuple[AliasMove, ...] = field(default=())
    sequence: int = 0
    """The number of its latest move (an alias recorded before moves were numbered counts its
    history)."""
    pending: tuple[Announcement, ...] = ()
    """Announcements of its moves that Kafka has not acknowledged yet, oldest first."""
    rollout: Rollout | None = None
    """The model's latest rollout, on ``production`` only; None when it never had one."""

    @property
    def rolling_out(self) -> Rollout | None:
        """The rollout still holding a candidate beside production, if any."""
        return self.rollout if self.rollout is not None and self.rollout.active else None

    def rollback_target(self) -> int | None:
        """The version a rollback returns to; None when nothing was served before.

        Deployments and promotions push the version they name onto a stack and rollbacks pop
        it, so a rollback returns to the version served before the latest promotion, and
        rolling back twice goes back two promotions (not forth and back between two versions).
        """
        stack: list[int | None] = []
        for move in self.history:
            if move.kind is MoveKind.ROLLBACK:
                if stack:
                    stack.pop()
            else:
                stack.append(move.to_version)
        return next((v for v in reversed(stack[:-1]) if v != self.version), None)

    def caused_by(self, event_id: str) -> AliasMove | None:
        """The move that deployed approval ``event_id``, if it happened (redeliveries)."""
        return next((m for m in self.history if m.cause == event_id), None)

    def made_by(self, request_id: str) -> AliasMove | None:
        """The move that operator request ``request_id`` made, if it made one (retries)."""
        return next((m for m in self.history if request_id and m.request_id == request_id), None)

    def history_after(self, move: AliasMove, keep: int) -> tuple[AliasMove, ...]:
        """The history once ``move`` is made: the newest ``keep`` moves, so an alias moved
        every day for years still fits its document (MongoDB's 16 MiB). Rollbacks reach back
        ``keep`` moves at most, and a retried request or redelivered approval is recognised
        while its move is among them."""
        return (*self.history, move)[-keep:]


@dataclass(frozen=True)
class Rejection:
    """A candidate the evaluator rejected, kept for lineage: a run that never became a version."""

    model_name: str
    run_id: str
    evaluation_id: str
    metrics: dict[str, float]
    checks: list[AssertionResult]
    report_key: str
    correlation_id: str
    rejected_at: datetime

    @property
    def id(self) -> str:
        return f"{self.model_name}:{self.evaluation_id}"


def version_id(model_name: str, version: int) -> str:
    """The ``_id`` of a version's document, deterministic so every write of it is an upsert."""
    return f"{model_name}@v{version}"


def alias_id(model_name: str, alias: str) -> str:
    """The ``_id`` of an alias's document."""
    return f"{model_name}:{alias}"


class Objects(Protocol):
    """The part of :class:`screwops_storage.ObjectStore` the registry uses: placing versions."""

    async def get_directory(self, bucket: str, prefix: str, root: Path) -> list[StoredObject]: ...

    async def put_directory(
        self, bucket: str, root: Path, *, prefix: str
    ) -> list[StoredObject]: ...


class RegistryStore(Protocol):
    """What the registry needs from its database.

    Every method raises :class:`~screwops_errors.UnavailableError` when the database does not
    answer (the bus retries the event; a gRPC client sees UNAVAILABLE); other errors are listed
    per method.
    """

    async def ensure_indexes(self) -> None:
        """Create the collections' indexes; the unique ones are what make writes safe.

        Raises:
            FailedPreconditionError: an index exists with different keys or options.
        """

    async def create_version(self, record: VersionRecord) -> bool:
        """Insert a new version.

        Returns:
            True when inserted; False, writing nothing, when the model already has a version
            with that number or a version for that run. Callers then look the run up and, if it
            is not registered, retry with the next number.
        """

    async def version_for_run(self, model_name: str, run_id: str) -> VersionRecord | None:
        """The version registered for a training run, or None."""

    async def latest_version(self, model_name: str) -> int:
        """The highest version number of the model, or 0 when it has none."""

    async def get_version(self, model_name: str, version: int) -> VersionRecord | None:
        """One version, or None when the model has no such version."""

    async def list_versions(
        self, model_name: str, *, offset: int, limit: int
    ) -> list[VersionRecord]:
        """A page of the model's versions, newest first (empty past the last one)."""

    async def set_status(
        self, model_name: str, version: int, status: VersionStatus, *, reason: str = ""
    ) -> None:
        """Record a version's new status (and why, for FAILED). Setting it again is a no-op.

        Raises:
            NotFoundError: no such version.
        """

    async def get_alias(self, model_name: str, alias: str) -> Alias | None:
        """The alias with its history, or None when it was never set."""

    async def aliases(self, alias: str) -> list[Alias]:
        """The alias of every model that has it (to restore what Triton serves at start-up)."""

    async def model_aliases(self, model_name: str) -> list[Alias]:
        """Every alias of the model, unset ones included, by name."""

    async def move_alias(
        self,
        model_name: str,
        alias: str,
        *,
        expected: Alias | None,
        move: AliasMove,
        announcements: Sequence[Announcement],
    ) -> bool:
        """In one update: point the alias at ``move.to_version``, append ``move`` to its
        history (keeping as many of the newest moves as the store was made to keep, see
        :meth:`Alias.history_after`), set its sequence to ``move.sequence``
        and queue ``announcements`` in its outbox, in order, only if it is still ``expected``
        (its version and sequence; None: only if it does not exist yet).

        Returns:
            True when moved; False, changing nothing, when someone else moved it first.
        """

    async def change_rollout(
        self,
        model_name: str,
        *,
        expected: Alias,
        rollout: Rollout,
        announcements: Sequence[Announcement],
        move: AliasMove | None = None,
    ) -> bool:
        """In one update of ``production``: make ``rollout`` its rollout (keeping as many of its
        newest changes as the store was made to keep), set its sequence to
        ``rollout.sequence`` and queue ``announcements`` in its outbox, in order; with ``move``,
        also move production as :meth:`move_alias` does (a completion). Only if it is still
        ``expected`` (its version and sequence).

        Returns:
            True when changed; False, changing nothing, when someone else changed it first.
        """

    async def queue_announcement(
        self, model_name: str, alias: str, *, version: int | None, announcement: Announcement
    ) -> bool:
        """Queue ``announcement`` in the alias's outbox, only if the alias still names
        ``version``; whether it was queued."""

    async def announced(self, model_name: str, alias: str, announcement_id: str) -> None:
        """Take announcement ``announcement_id`` out of the alias's outbox: Kafka acknowledged
        it."""

    async def record_rejection(self, rejection: Rejection) -> None:
        """Keep a rejected candidate; recording the same evaluation again changes nothing."""


class MongoRegistryStore:
    """:class:`RegistryStore` on motor; works on FerretDB v1 and MongoDB alike."""

    def __init__(
        self, db: AsyncIOMotorDatabase[Any], *, history_limit: int = DEFAULT_HISTORY_LIMIT
    ) -> None:
        self._db = db
        self.history_limit = history_limit
        # FerretDB v1 evaluates an update's filter and writes the document it changed back as
        # two steps, so concurrent compare-and-sets of one alias could all match and each
        # rewrite the document (moves, rollout changes and outbox entries lost). Its writes are
        # taken one at a time here; the registry runs as one process.
        self._alias_writes = asyncio.Lock()

    async def ensure_indexes(self) -> None:
        await ensure_indexes(self._db, INDEXES)

    async def create_version(self, record: VersionRecord) -> bool:
        try:
            with mongo_errors():
                await self._db.model_versions.insert_one(
                    {
                        "_id": record.id,
                        "model_name": record.model_name,
                        "version": record.version,
                        "run_id": record.run_id,
                        "evaluation_id": record.evaluation_id,
                        "dataset_id": record.dataset_id,
                        "dataset_version": record.dataset_version,
                        "artifact_key": record.artifact_key,
                        "metrics": record.metrics,
                        "checks": [c.model_dump(mode="json") for c in record.checks],
                        "champion_version": record.champion_version,
                        "report_key": record.report_key,
                        "correlation_id": record.correlation_id,
                        "approved_by": record.approved_by,
                        "created_at": record.created_at,
                        "status": str(record.status),
                        "failure_reason": record.failure_reason,
                        "threshold": record.threshold,
                        "model_kind": record.model_kind.value,
                        "frame_size": record.frame_size,
                    }
                )
        except AlreadyExistsError:
            return False
        return True

    async def version_for_run(self, model_name: str, run_id: str) -> VersionRecord | None:
        with mongo_errors():
            doc = await self._db.model_versions.find_one(
                {"model_name": model_name, "run_id": run_id}
            )
        return _version(doc) if doc else None

    async def latest_version(self, model_name: str) -> int:
        with mongo_errors():
            docs = (
                await self._db.model_versions.find({"model_name": model_name}, {"version": 1})
                .sort("version", -1)
                .limit(1)
                .to_list(1)
            )
        return int(docs[0]["version"]) if docs else 0

    async def get_version(self, model_name: str, version: int) -> VersionRecord | None:
        with mongo_errors():
            doc = await self._db.model_versions.find_one({"_id": version_id(model_name, version)})
        return _version(doc) if doc else None

    async def list_versions(
        self, model_name: str, *, offset: int, limit: int
    ) -> list[VersionRecord]:
        with mongo_errors():
            docs = (
                await self._db.model_versions.find({"model_name": model_name})
                .sort("version", -1)
                .skip(offset)
                .limit(limit)
                .to_list(limit)
            )
        return [_version(d) for d in docs]

    async def set_status(
        self, model_name: str, version: int, status: VersionStatus, *, reason: str = ""
    ) -> None:
        with mongo_errors():
            result = await self._db.model_versions.update_one(
                {"_id": version_id(model_name, version)},
                {"$set": {"status": str(status), "failure_reason": reason}},
            )
        if result.matched_count == 0:
            raise NotFoundError(f"{model_name} has no version {version}")

    async def get_alias(self, model_name: str, alias: str) -> Alias | None:
        with mongo_errors():
            doc = await self._db.aliases.find_one({"_id": alias_id(model_name, alias)})
        return _alias(doc) if doc else None

    async def aliases(self, alias: str) -> list[Alias]:
        with mongo_errors():
            docs = await self._db.aliases.find({"alias": alias}).to_list(None)
        return sorted((_alias(d) for d in docs), key=lambda a: a.model_name)

    async def model_aliases(self, model_name: str) -> list[Alias]:
        with mongo_errors():
            docs = await self._db.aliases.find({"model_name": model_name}).to_list(None)
        return sorted((_alias(d) for d in docs), key=lambda a: a.name)

    async def move_alias(
        self,
        model_name: str,
        alias: str,
        *,
        expected: Alias | None,
        move: AliasMove,
        announcements: Sequence[Announcement],
    ) -> bool:
        if expected is None:
            try:
                with mongo_errors():
                    await self._db.aliases.insert_one(
                        {
                            "_id": alias_id(model_name, alias),
                            "model_name": model_name,
                            "alias": alias,
                            "version": move.to_version,
                            "history": [_move_doc(move)],
                            "sequence": move.sequence,
                            OUTBOX: [a.document() for a in announcements],
                            PENDING: True,
                        }
                    )
            except AlreadyExistsError:
                return False
            return True
        # The whole kept history is set rather than pushed and sliced: the update is
        # conditional on the sequence read with it, so it replaces exactly what was read.
        return await self._update_expected(
            model_name,
            alias,
            expected,
            {
                "version": move.to_version,
                "sequence": move.sequence,
                "history": [_move_doc(m) for m in expected.history_after(move, self.history_limit)],
                PENDING: True,
            },
            announcements,
        )

    async def change_rollout(
        self,
        model_name: str,
        *,
        expected: Alias,
        rollout: Rollout,
        announcements: Sequence[Announcement],
        move: AliasMove | None = None,
    ) -> bool:
        changes: dict[str, Any] = {
            "sequence": rollout.sequence,
            "rollout": _rollout_doc(rollout, self.history_limit),
            PENDING: True,
        }
        if move is not None:
            changes["version"] = move.to_version
            changes["history"] = [
                _move_doc(m) for m in expected.history_after(move, self.history_limit)
            ]
        return await self._update_expected(
            model_name, PRODUCTION_ALIAS, expected, changes, announcements
        )

    async def queue_announcement(
        self, model_name: str, alias: str, *, version: int | None, announcement: Announcement
    ) -> bool:
        return await self._update_alias(
            {"_id": alias_id(model_name, alias), "version": version},
            {"$set": {PENDING: True}, "$push": {OUTBOX: announcement.document()}},
        )

    async def announced(self, model_name: str, alias: str, announcement_id: str) -> None:
        async with self._alias_writes:
            await mark_sent(self._db[ALIASES], alias_id(model_name, alias), announcement_id)

    async def _update_expected(
        self,
        model_name: str,
        alias: str,
        expected: Alias,
        changes: dict[str, Any],
        announcements: Sequence[Announcement],
    ) -> bool:
        """Set ``changes`` and queue ``announcements`` only if the alias is still ``expected``
        (its version and sequence)."""
        return await self._update_alias(
            {
                "_id": alias_id(model_name, alias),
                "version": expected.version,
                # An alias recorded before moves were numbered has no sequence: its first
                # numbered move sets it.
                "$or": [
                    {"sequence": expected.sequence},
                    {"sequence": {"$exists": False}},
                ],
            },
            {
                "$set": changes,
                "$push": {OUTBOX: {"$each": [a.document() for a in announcements]}},
            },
        )

    async def _update_alias(self, query: dict[str, Any], update: dict[str, Any]) -> bool:
        """One alias write at a time (see ``_alias_writes``); whether ``query`` matched."""
        async with self._alias_writes:
            with mongo_errors():
                result = await self._db.aliases.update_one(query, update)
        return result.matched_count == 1

    async def record_rejection(self, rejection: Rejection) -> None:
        with mongo_errors():
            await self._db.rejections.update_one(
                {"_id": rejection.id},
                {
                    "$setOnInsert": {
                        "model_name": rejection.model_name,
                        "run_id": rejection.run_id,
                        "evaluation_id": rejection.evaluation_id,
                        "metrics": rejection.metrics,
                        "checks": [c.model_dump(mode="json") for c in rejection.checks],
                        "report_key": rejection.report_key,
                        "correlation_id": rejection.correlation_id,
                        "rejected_at": rejection.rejected_at,
                    }
                },
                upsert=True,
            )


def _version(doc: dict[str, Any]) -> VersionRecord:
    return VersionRecord(
        model_name=doc["model_name"],
        version=int(doc["version"]),
        run_id=doc["run_id"],
        evaluation_id=doc["evaluation_id"],
        dataset_id=doc["dataset_id"],
        dataset_version=int(doc["dataset_version"]),
        artifact_key=doc["artifact_key"],
        metrics={name: float(value) for name, value in doc["metrics"].items()},
        checks=[AssertionResult.model_validate(c) for c in doc["checks"]],
        champion_version=doc["champion_version"],
        report_key=doc["report_key"],
        correlation_id=doc["correlation_id"],
        approved_by=doc["approved_by"],
        created_at=doc["created_at"],
        status=VersionStatus(doc["status"]),
        failure_reason=doc["failure_reason"],
        threshold=float(doc.get("threshold", DEFAULT_THRESHOLD)),
        model_kind=ModelKind(doc.get("model_kind", ModelKind.SUPERVISED)),
        frame_size=int(doc.get("frame_size", NO_FRAME_SIZE)),
    )


def _move_doc(move: AliasMove) -> dict[str, Any]:
    return {
        "from": move.from_version,
        "to": move.to_version,
        "kind": str(move.kind),
        "actor": move.actor,
        "reason": move.reason,
        "at": move.at,
        "cause": move.cause,
        "sequence": move.sequence,
        "request_id": move.request_id,
    }


def _alias(doc: dict[str, Any]) -> Alias:
    history = tuple(
        AliasMove(
            from_version=entry["from"],
            to_version=_number(entry["to"]),
            kind=MoveKind(entry["kind"]),
            actor=entry["actor"],
            reason=entry["reason"],
            at=entry["at"],
            cause=entry["cause"],
            sequence=int(entry.get("sequence", 0)),
            request_id=entry.get("request_id", ""),
        )
        for entry in doc["history"]
    )
    return Alias(
        model_name=doc["model_name"],
        name=doc["alias"],
        version=_number(doc["version"]),
        history=history,
        sequence=int(doc.get("sequence", len(history))),
        pending=pending_in(doc),
        rollout=_rollout(doc["rollout"]) if doc.get("rollout") else None,
    )


def _rollout_doc(rollout: Rollout, keep: int) -> dict[str, Any]:
    return {
        "id": rollout.id,
        "strategy": str(rollout.strategy),
        "production": rollout.production,
        "candidate": rollout.candidate,
        "steps": list(rollout.steps),
        "lines": list(rollout.lines),
        "min_inspections": rollout.min_inspections,
        "min_step_seconds": rollout.min_step_seconds,
        "state": str(rollout.state),
        "step": rollout.step,
        "started_at": rollout.started_at,
        "step_started_at": rollout.step_started_at,
        "cause": rollout.cause,
        "changes": [
            {
                "kind": str(c.kind),
                "step": c.step,
                "actor": c.actor,
                "reason": c.reason,
                "at": c.at,
                "sequence": c.sequence,
                "request_id": c.request_id,
            }
            for c in rollout.changes[-keep:]
        ],
    }


def _rollout(doc: dict[str, Any]) -> Rollout:
    return Rollout(
        id=doc["id"],
        strategy=RolloutStrategy(doc["strategy"]),
        production=int(doc["production"]),
        candidate=int(doc["candidate"]),
        steps=tuple(float(s) for s in doc["steps"]),
        lines=tuple(doc["lines"]),
        min_inspections=int(doc["min_inspections"]),
        min_step_seconds=float(doc["min_step_seconds"]),
        state=RolloutState(doc["state"]),
        step=int(doc["step"]),
        started_at=doc["started_at"],
        step_started_at=doc["step_started_at"],
        cause=doc.get("cause"),
        changes=tuple(
            RolloutChange(
                kind=RolloutChangeKind(c["kind"]),
                step=int(c["step"]),
                actor=c["actor"],
                reason=c["reason"],
                at=c["at"],
                sequence=int(c["sequence"]),
                request_id=c.get("request_id", ""),
            )
            for c in doc["changes"]
        ),
    )


def _number(value: Any) -> int | None:
    """A version as a document keeps it: None where an alias was unset."""
    return None if value is None else int(value)
