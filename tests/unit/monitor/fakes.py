"""An in-memory stand-in for the monitor's store (unit tests).

:class:`FakeStore` keeps the same rules as the Mongo store: a production move only if it is later,
an alarm or a training request claimed by one cause, and the cooldown measured from the last
request, a rollout change only if its sequence is newer. Two services built on one fake store are
a monitor before and after a restart.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from screwops_monitor.signals import Observation, Review
from screwops_monitor.store import (
    Firing,
    Production,
    RolloutRecord,
    ServedVersion,
    TrainingClaim,
)


class FakeStore:
    """:class:`screwops_monitor.store.MonitorStore` in memory."""

    def __init__(self) -> None:
        self.production: dict[str, Production] = {}
        self.versions: dict[tuple[str, int], ServedVersion] = {}
        self.reference_kept: dict[str, tuple[str, int, Observation]] = {}
        self.observations: dict[str, tuple[str, int, Observation]] = {}
        self.reviews: dict[str, tuple[str, int, Review]] = {}
        self.alarms: dict[tuple[str, int, str], tuple[bool, Firing]] = {}
        self.training: dict[str, TrainingClaim] = {}
        self.rollouts: dict[str, RolloutRecord] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def get_production(self, model_name: str) -> Production | None:
        return self.production.get(model_name)

    async def set_production(self, production: Production) -> bool:
        current = self.production.get(production.model_name)
        if current is not None and current.since >= production.since:
            return False
        self.production[production.model_name] = production
        return True

    async def save_version(self, served: ServedVersion) -> None:
        self.versions[(served.model_name, served.version)] = served

    async def get_version(self, model_name: str, version: int) -> ServedVersion | None:
        return self.versions.get((model_name, version))

    async def reset(self, model_name: str) -> None:
        self.reference_kept = {k: v for k, v in self.reference_kept.items() if v[0] != model_name}
        self.observations = {k: v for k, v in self.observations.items() if v[0] != model_name}
        self.reviews = {k: v for k, v in self.reviews.items() if v[0] != model_name}
        self.alarms = {k: v for k, v in self.alarms.items() if k[0] != model_name}

    async def add_reference(self, model_name: str, version: int, item: Observation) -> None:
        self.reference_kept.setdefault(item.event_id, (model_name, version, item))

    async def reference(self, model_name: str, version: int) -> list[Observation]:
        items = [o for m, v, o in self.reference_kept.values() if (m, v) == (model_name, version)]
        return sorted(items, key=lambda o: (o.seen_at, o.event_id))

    async def add_observation(self, model_name: str, version: int, item: Observation) -> None:
        self.observations.setdefault(item.event_id, (model_name, version, item))

    async def recent_observations(
        self, model_name: str, version: int, limit: int
    ) -> list[Observation]:
        items = [o for m, v, o in self.observations.values() if (m, v) == (model_name, version)]
        return sorted(items, key=lambda o: (o.seen_at, o.event_id))[-limit:]

    async def prune_observations(self, model_name: str, version: int, before: datetime) -> int:
        gone = [
            k
            for k, (m, v, o) in self.observations.items()
            if (m, v) == (model_name, version) and o.seen_at < before
        ]
        for key in gone:
            del self.observations[key]
        return len(gone)

    async def add_review(self, model_name: str, version: int, item: Review) -> None:
        self.reviews[item.inspection_id] = (model_name, version, item)

    async def recent_reviews(self, model_name: str, version: int, limit: int) -> list[Review]:
        items = [r for m, v, r in self.reviews.values() if (m, v) == (model_name, version)]
        return sorted(items, key=lambda r: (r.seen_at, r.inspection_id))[-limit:]

    async def prune_reviews(self, model_name: str, version: int, before: datetime) -> int:
        gone = [
            k
            for k, (m, v, r) in self.reviews.items()
            if (m, v) == (model_name, version) and r.seen_at < before
        ]
        for key in gone:
            del self.reviews[key]
        return len(gone)

    async def fired(self, model_name: str, version: int) -> dict[str, str]:
        return {
            signal: firing.cause_event_id
            for (m, v, signal), (armed, firing) in self.alarms.items()
            if (m, v) == (model_name, version) and not armed
        }

    async def claim_firing(self, model_name: str, version: int, firing: Firing) -> bool:
        key = (model_name, version, firing.signal)
        current = self.alarms.get(key)
        if current is None or current[0]:
            self.alarms[key] = (False, firing)
            return True
        return current[1].cause_event_id == firing.cause_event_id

    async def rearm(self, model_name: str, version: int, signal: str) -> None:
        key = (model_name, version, signal)
        if key in self.alarms:
            self.alarms[key] = (True, self.alarms[key][1])

    async def claim_training(self, claim: TrainingClaim, cooldown: timedelta) -> bool:
        last = self.training.get(claim.model_name)
        if last is None or last.requested_at <= claim.requested_at - cooldown:
            self.training[claim.model_name] = claim
            return True
        return last.cause_event_id == claim.cause_event_id

    async def last_training(self, model_name: str) -> TrainingClaim | None:
        return self.training.get(model_name)

    async def get_rollout(self, model_name: str) -> RolloutRecord | None:
        return self.rollouts.get(model_name)

    async def save_rollout(self, record: RolloutRecord) -> bool:
        current = self.rollouts.get(record.rollout.model_name)
        if current is not None and current.rollout.sequence >= record.rollout.sequence:
            return False
        self.rollouts[record.rollout.model_name] = record
        return True
