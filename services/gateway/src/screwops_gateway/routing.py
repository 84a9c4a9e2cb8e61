"""Which version answers an inspection during a rollout, and which also scores it off the
response path: pure functions of the serving state, the line and the request id.

Every request id falls in one of ``BUCKETS`` buckets by a stable hash (BLAKE2b, never Python's
``hash``, which is salted per process), so every gateway replica, restarted or not, routes the same
request the same way and a client retrying a request meets the same version. A running rollout
that covers the request's line takes the buckets below ``share * 100`` (``share`` in percent):

- **canary**: the candidate answers, at its own threshold, naming its own version; production
  scores the same image off the response path, so the rollout controller compares verdicts on
  the same traffic;
- **shadow**: production answers as always, and the candidate scores the image off the response
  path, its answer only compared and counted.

A request without a request id has nothing to be deterministic about: it takes a random bucket,
so such requests still split by the share rather than all going one way.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from screwops_gateway.store import CANARY, Rollout, ServingModel

BUCKETS = 10_000
"""Buckets of request ids: a share is honoured to a hundredth of a percent."""


class Role(StrEnum):
    """What a version does for a request (the metrics' ``role`` and the record's)."""

    PRODUCTION = "production"
    CANARY = "canary"
    SHADOW = "shadow"


@dataclass(frozen=True)
class Reference:
    """The version that scores a request off the response path, and in which role."""

    model: ServingModel
    role: Role


@dataclass(frozen=True)
class Route:
    """Who answers a request and who, if anyone, scores it beside, off the response path."""

    answer: ServingModel
    role: Role
    rollout_id: str | None = None
    """The rollout the request takes part in (either side of it); None outside any."""
    reference: Reference | None = None


def bucket(request_id: str) -> int:
    """The request id's bucket in ``[0, BUCKETS)``, the same in every process."""
    if not request_id:
        return secrets.randbelow(BUCKETS)
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def route(production: ServingModel, rollout: Rollout | None, *, line_id: str, bucket: int) -> Route:
    """Route an unpinned request of ``line_id`` whose id fell in ``bucket``."""
    if rollout is None or not rollout.routes or not rollout.covers(line_id):
        return Route(production, Role.PRODUCTION)
    if bucket >= rollout.share * BUCKETS / 100:
        return Route(production, Role.PRODUCTION, rollout.rollout_id)
    if rollout.strategy == CANARY:
        return Route(
            rollout.candidate,
            Role.CANARY,
            rollout.rollout_id,
            Reference(production, Role.PRODUCTION),
        )
    return Route(
        production, Role.PRODUCTION, rollout.rollout_id, Reference(rollout.candidate, Role.SHADOW)
    )
