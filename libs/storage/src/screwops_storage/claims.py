"""Claims of attempts at work a MongoDB document records, fenced by the attempt's number.

A worker claims the work before it writes anything: the document holds ``status`` (the work is
unfinished), the number of ``attempts`` claimed, when the latest was claimed (:data:`CLAIMED_AT`)
and when its worker last said it was alive (:data:`HEARTBEAT_AT`). Only the latest attempt holds
the claim, and every write that commits its result is conditional on that (:func:`holding`), so
a worker whose claim was taken over writes nothing, however late it comes: its number is fenced
out. Its artifacts are written under keys derived from its number, so two attempts never write
one key, and the ones no record references are swept (:func:`sweep_attempts`).

A claim is taken over only from a worker that is gone (no heartbeat for
:attr:`ClaimTimes.silence_s`) or that ran past the work's run limit (:attr:`ClaimTimes.max_run_s`,
heartbeats or not: a hung worker's heartbeat task may live on). A live claim is left to its worker:
a second delivery of the same work (a rebalance) waits for it (:class:`Held`). Every claim and
every takeover gets the next number, by compare-and-swap on the number it saw, so numbers only
grow and two takers never get one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from motor.motor_asyncio import AsyncIOMotorCollection
from screwops_errors import AlreadyExistsError, ScrewOpsError, TransientError

from screwops_storage.mongo import Document, mongo_errors
from screwops_storage.objects import ListedObject

__all__ = [
    "ATTEMPTS",
    "CLAIMED_AT",
    "HEARTBEAT_AT",
    "AttemptObjects",
    "ClaimLostError",
    "ClaimTimes",
    "Held",
    "Lease",
    "SweepTimes",
    "claim_attempt",
    "claim_when_free",
    "commit_attempt",
    "holding",
    "keep_sweeping",
    "record_after_claim",
    "renew_claim",
    "sweep_attempts",
]

log = logging.getLogger("screwops.storage.claims")

R = TypeVar("R")

ATTEMPTS = "attempts"
"""The number of attempts claimed; the latest one holds the claim."""
CLAIMED_AT = "claimed_at"
"""When the latest attempt was claimed (or took the claim over)."""
HEARTBEAT_AT = "heartbeat_at"
"""When the latest attempt's worker last renewed its claim."""

_MAX_RACES = 3
"""Claims lost to another claimant's write between the read and the write, before giving up."""


@dataclass(frozen=True)
class ClaimTimes:
    """How long an attempt may run and how often its worker renews its claim."""

    max_run_s: float
    heartbeat_s: float = 10.0

    @property
    def silence_s(self) -> float:
        """A claim not renewed for this long is abandoned (three heartbeats missed)."""
        return 3 * self.heartbeat_s


@dataclass(frozen=True)
class SweepTimes:
    """How often the objects of attempts that lost are swept, and how old one must be."""

    interval_s: float = 3600.0
    min_age_s: float = 3600.0


@dataclass(frozen=True)
class Held:
    """The work is claimed by a live attempt: wait for it to finish or go stale."""

    attempt: int


class ClaimLostError(Exception):
    """The attempt no longer holds its claim (another took it over): its result is discarded."""


def holding(document_id: str, *, status: str, attempt: int) -> Document:
    """The filter of a write that commits attempt ``attempt``'s result: it matches only while
    the work is unfinished and that attempt is the latest."""
    return {"_id": document_id, "status": status, ATTEMPTS: attempt}


async def claim_attempt(
    collection: AsyncIOMotorCollection[Document],
    document_id: str,
    *,
    status: str,
    on_insert: Document,
    times: ClaimTimes,
    on_claim: Callable[[int], Document] | None = None,
    reclaimable: tuple[str, ...] = (),
) -> int | Held | None:
    """Claim an attempt at the work ``document_id`` records: its number; :class:`Held` while a
    live attempt holds it; None when the document is complete (its ``status`` field says neither
    ``status`` nor one of ``reclaimable``, the outcomes that are tried again, such as a failure:
    the caller reads its record). The first claim inserts the document with ``on_insert``; every
    claim sets the fields ``on_claim`` gives for its number. A claim from before heartbeats were
    kept counts as alive from its claim time; one from before claim times were kept is taken
    over.

    Raises:
        AlreadyExistsError: other claimants won every race for it (:data:`_MAX_RACES`).
    """
    for _ in range(_MAX_RACES):
        now = datetime.now(UTC)
        with mongo_errors():
            doc = await collection.find_one({"_id": document_id})
        if doc is not None and doc.get("status") not in (status, *reclaimable):
            return None
        if doc is not None and doc.get("status") == status and not _abandoned(doc, now, times):
            return Held(int(doc[ATTEMPTS]))
        attempt = 1 if doc is None else int(doc[ATTEMPTS]) + 1
        fresh = {
            **(on_claim(attempt) if on_claim else {}),
            "status": status,
            ATTEMPTS: attempt,
            CLAIMED_AT: now,
            HEARTBEAT_AT: now,
        }
        if doc is None:
            try:
                with mongo_errors():
                    await collection.insert_one({**on_insert, **fresh, "_id": document_id})
            except AlreadyExistsError:
                continue  # claimed meanwhile by another: read it again
            return attempt
        with mongo_errors():
            taken = await collection.update_one(
                {"_id": document_id, "status": doc["status"], ATTEMPTS: doc[ATTEMPTS]},
                {"$set": fresh},
            )
        if taken.matched_count:
            if doc["status"] == status:
                log.warning(
                    "%s: attempt %d abandoned (claimed at %s, last heard of at %s); taken over",
                    document_id,
                    doc[ATTEMPTS],
                    doc.get(CLAIMED_AT),
                    doc.get(HEARTBEAT_AT),
                )
            return attempt
    raise AlreadyExistsError(f"{document_id} could not be claimed")


async def record_after_claim(read: Callable[[], Awaitable[R | None]], *, name: str) -> R:
    """The work's record as ``read`` finds it after a claim (the finished record, where the
    claim found the work complete): a record that is not there is a claim that failed.

    Raises:
        AlreadyExistsError: ``read`` found no record of ``name``.
    """
    record = await read()
    if record is None:
        raise AlreadyExistsError(f"{name} could not be claimed")
    return record


async def commit_attempt(
    collection: AsyncIOMotorCollection[Document],
    document_id: str,
    *,
    status: str,
    attempt: int,
    update: Document,
) -> bool:
    """Apply ``update`` to the document only while attempt ``attempt`` holds the claim
    (:func:`holding`): whether it did, False once another attempt took it over or the work is
    complete."""
    with mongo_errors():
        done = await collection.update_one(
            holding(document_id, status=status, attempt=attempt), update
        )
    return done.matched_count == 1


async def claim_when_free(
    claim: Callable[[], Awaitable[Held | R]], *, times: ClaimTimes, name: str
) -> R:
    """``claim`` again every heartbeat while a live attempt holds the work: what ``claim``
    answers otherwise (the attempt claimed, or the finished work's record). The wait ends when
    the holder finishes, stops renewing its claim, or runs past the run limit, so it is bounded
    by ``times.max_run_s``."""
    while True:
        claimed = await claim()
        if not isinstance(claimed, Held):
            return claimed
        log.info("%s is held by live attempt %d; waiting for it", name, claimed.attempt)
        await asyncio.sleep(times.heartbeat_s)


async def renew_claim(
    collection: AsyncIOMotorCollection[Document], document_id: str, *, status: str, attempt: int
) -> bool:
    """Say attempt ``attempt`` is alive; False when it no longer holds the claim."""
    with mongo_errors():
        renewed = await collection.update_one(
            holding(document_id, status=status, attempt=attempt),
            {"$set": {HEARTBEAT_AT: datetime.now(UTC)}},
        )
    return renewed.matched_count == 1


def _abandoned(doc: Document, now: datetime, times: ClaimTimes) -> bool:
    claimed_at: datetime | None = doc.get(CLAIMED_AT)
    if claimed_at is None:
        return True
    claimed_at = _aware(claimed_at)
    alive_at = _aware(doc.get(HEARTBEAT_AT) or claimed_at)
    ran_past_limit = now - claimed_at >= timedelta(seconds=times.max_run_s)
    return ran_past_limit or now - alive_at >= timedelta(seconds=times.silence_s)


def _aware(value: datetime) -> datetime:
    """MongoDB stores UTC; a client without ``tz_aware`` hands it back naive."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Lease:
    """Renews an attempt's claim every ``interval_s`` while its work runs (``async with``).

    A renewal that finds the claim taken over marks the lease lost, and :meth:`check`, called by
    the work before each step that writes, raises :class:`ClaimLostError` from then on: the
    worker stops there. A renewal MongoDB does not answer is logged and tried again at the next
    beat; meanwhile the claim may go stale, which the conditional commit catches.
    """

    def __init__(
        self, renew: Callable[[], Awaitable[bool]], *, interval_s: float, name: str
    ) -> None:
        self._renew = renew
        self._interval_s = interval_s
        self._name = name
        self._beat: asyncio.Task[None] | None = None
        self.lost = False

    async def __aenter__(self) -> Lease:
        self._beat = asyncio.create_task(self._keep(), name=f"lease {self._name}")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)

    def check(self) -> None:
        """Raise :class:`ClaimLostError` once a renewal found the claim taken over."""
        if self.lost:
            raise ClaimLostError(f"{self._name}: the claim was taken over by a later attempt")

    async def _keep(self) -> None:
        while not self.lost:
            await asyncio.sleep(self._interval_s)
            try:
                self.lost = not await self._renew()
            except TransientError as error:
                log.warning("%s: claim not renewed: %s", self._name, error.message)
        log.warning("%s: the claim was taken over; this attempt stops", self._name)


class AttemptObjects(Protocol):
    """The part of :class:`screwops_storage.ObjectStore` a sweep uses."""

    async def list_objects(self, bucket: str, prefix: str) -> list[ListedObject]: ...

    async def delete_objects(self, bucket: str, keys: Sequence[str]) -> None: ...


async def sweep_attempts(
    objects: AttemptObjects,
    collection: AsyncIOMotorCollection[Document],
    *,
    bucket: str,
    prefix: str,
    attempt_of: Callable[[str], tuple[str, int] | None],
    status: str,
    recorded_key: str,
    min_age_s: float,
) -> list[str]:
    """Delete the objects under ``prefix`` written by attempts that lost: the keys deleted.

    ``attempt_of`` names the document (its ``_id``) and the attempt of an attempt's key (None
    for any other key). An object is deleted when it is older than ``min_age_s`` and
    its attempt is not the document's: of a complete document, the attempt whose key the
    record's ``recorded_key`` field names (every other lost); of an unfinished one, any before
    the latest (fenced out; the latest may still be running or be taken over, and keeps its
    objects until then). Objects of a document that does not exist are left alone.
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=min_age_s)
    candidates: dict[str, list[tuple[int, str]]] = {}
    for listed in await objects.list_objects(bucket, prefix):
        found = attempt_of(listed.key)
        if found is not None and listed.modified <= cutoff:
            candidates.setdefault(found[0], []).append((found[1], listed.key))
    lost: list[str] = []
    for document_id, written in candidates.items():
        with mongo_errors():
            doc = await collection.find_one({"_id": document_id})
        if doc is None:
            continue
        keep = _kept_attempt(doc, attempt_of, status=status, recorded_key=recorded_key)
        lost.extend(key for attempt, key in written if attempt != keep and _before(attempt, doc))
    if lost:
        await objects.delete_objects(bucket, lost)
        log.info("swept %d objects of attempts that lost from %s/%s", len(lost), bucket, prefix)
    return lost


def _kept_attempt(
    doc: Document,
    attempt_of: Callable[[str], tuple[str, int] | None],
    *,
    status: str,
    recorded_key: str,
) -> int:
    """The attempt whose objects stay: the latest while unfinished, else the recorded one (0,
    none, for a record from before attempts were kept apart)."""
    if doc.get("status") == status:
        return int(doc[ATTEMPTS])
    found = attempt_of(str(doc.get(recorded_key, "")))
    return found[1] if found else 0


def _before(attempt: int, doc: Document) -> bool:
    """Whether ``attempt`` was claimed already (a higher number is one the listing saw written
    before the document was read: leave it for the next sweep)."""
    return attempt <= int(doc.get(ATTEMPTS, 0))


async def keep_sweeping(sweep: Callable[[], Awaitable[object]], *, interval_s: float) -> None:
    """Run ``sweep`` every ``interval_s`` from the start until cancelled; a store away is logged
    and tried again next time, and so is a refusal (a MinIO user not allowed to delete), which
    must not end the loop: the objects are only wasted space until it is mended."""
    while True:
        try:
            await sweep()
        except TransientError as error:
            log.warning("cannot sweep attempts that lost yet: %s", error.message)
        except ScrewOpsError as error:
            log.error("sweeping attempts that lost was refused: %s", error.message)
        await asyncio.sleep(interval_s)
