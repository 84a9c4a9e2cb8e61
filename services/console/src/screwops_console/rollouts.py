"""The pipeline page's rollout panel: the model's latest rollout as the registry records it
(``GetRollout``), beside the live comparison of its two versions, summed over every gateway
replica by Prometheus.

The registry holds what was decided (strategy, steps, where the rollout stands, who changed it
and why); the gateways count what happened (each version's calls by role and path, their
latency, and whether the candidate's verdict agreed with production's on the same image). Both
are shown so an operator pausing, advancing or aborting sees the evidence the rollout controller
judges, not only its decisions. The comparison covers the whole rollout, from its start to now,
or to its end once it completed or was aborted.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.timestamp_pb2 import Timestamp
from screwops.v1 import registry_pb2

from screwops_console.prometheus import Prometheus, Sample, label

MIN_WINDOW_S = 60
"""The shortest range the comparison sums over: Prometheus needs two scrapes in a range to
count an increase, so a rollout a few seconds old is looked at over its last minute."""

ACTIONS: dict[str, str] = {
    "advance": "AdvanceRollout",
    "pause": "PauseRollout",
    "resume": "ResumeRollout",
    "abort": "AbortRollout",
}
"""What an operator may do to a rollout from the panel, and the registry's method for each."""

OFFERED = {
    registry_pb2.ROLLOUT_STATE_RUNNING: ("advance", "pause", "abort"),
    registry_pb2.ROLLOUT_STATE_PAUSED: ("resume", "abort"),
}
"""The actions the panel offers in each state; a finished rollout takes none."""


def _name(enum: EnumDescriptor, value: int) -> str:
    """``value``'s name less the enum's prefix, in lower case ("canary", "running"); "unknown"
    for a value newer than this console."""
    found = enum.values_by_number.get(value)
    if found is None:
        return "unknown"
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")
    return found.name.removeprefix(prefix).lower()


def time_of(stamp: Timestamp) -> datetime | None:
    """``stamp`` as an aware datetime; None when unset (the registry never sent it)."""
    return stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else None


@dataclass(frozen=True)
class Side:
    """How one version answered in one role and path during the rollout: ``response`` when its
    answer was the request's, ``off_path`` when it only scored the image for the comparison."""

    version: int
    role: str
    path: str
    answered: int = 0
    no_part: int = 0
    failed: int = 0
    p99_s: float | None = None

    @property
    def calls(self) -> int:
        return self.answered + self.no_part + self.failed


@dataclass(frozen=True)
class Comparison:
    """The candidate against production over ``since``..``until``, from the gateways' metrics."""

    since: datetime
    until: datetime
    agree: int
    disagree: int
    mean_difference: float | None
    sides: list[Side]

    @property
    def compared(self) -> int:
        return self.agree + self.disagree

    @property
    def disagreement(self) -> float | None:
        """The share of compared images whose verdicts differed; None before any."""
        return self.disagree / self.compared if self.compared else None


@dataclass(frozen=True)
class Change:
    """One change of a rollout: what, at which step, who asked and why."""

    kind: str
    step: int
    actor: str
    reason: str
    changed_at: datetime | None
    sequence: int

    @classmethod
    def of(cls, change: registry_pb2.RolloutChange) -> Change:
        return cls(
            kind=_name(registry_pb2.RolloutChangeKind.DESCRIPTOR, change.kind),
            step=change.step,
            actor=change.actor,
            reason=change.reason,
            changed_at=time_of(change.changed_at),
            sequence=change.sequence,
        )


@dataclass(frozen=True)
class RolloutView:
    """A rollout as the registry records it, as the panel shows it."""

    rollout_id: str
    strategy: str
    state: str
    production_version: int
    candidate_version: int
    steps: list[float]
    step: int
    share: float
    lines: list[str]
    min_inspections: int
    min_step_seconds: float
    started_at: datetime | None
    step_started_at: datetime | None
    changes: list[Change]
    actions: tuple[str, ...]

    @property
    def shadow(self) -> bool:
        return self.strategy == "shadow"

    @classmethod
    def of(cls, rollout: registry_pb2.Rollout) -> RolloutView:
        return cls(
            rollout_id=rollout.rollout_id,
            strategy=_name(registry_pb2.RolloutStrategy.DESCRIPTOR, rollout.strategy),
            state=_name(registry_pb2.RolloutState.DESCRIPTOR, rollout.state),
            production_version=rollout.production_version,
            candidate_version=rollout.candidate_version,
            steps=list(rollout.steps),
            step=rollout.step,
            share=rollout.share,
            lines=list(rollout.lines),
            min_inspections=rollout.min_inspections,
            min_step_seconds=rollout.min_step_seconds,
            started_at=time_of(rollout.started_at),
            step_started_at=time_of(rollout.step_started_at),
            changes=[Change.of(change) for change in rollout.changes],
            actions=OFFERED.get(rollout.state, ()),
        )


def window(rollout: registry_pb2.Rollout, now: datetime) -> tuple[datetime, datetime]:
    """From the rollout's start to now, or to its last change once it has ended (its figures
    stop growing then, and later traffic is production's alone)."""
    since = time_of(rollout.started_at) or now
    ended = rollout.state in (
        registry_pb2.ROLLOUT_STATE_COMPLETED,
        registry_pb2.ROLLOUT_STATE_ABORTED,
    )
    last = time_of(rollout.changes[-1].changed_at) if ended and rollout.changes else None
    return since, min(last or now, now)


async def compare(
    prometheus: Prometheus, rollout: registry_pb2.Rollout, now: datetime
) -> Comparison:
    """Sum the gateways' figures for the rollout's two versions over its :func:`window`."""
    since, until = window(rollout, now)
    seconds = max(MIN_WINDOW_S, math.ceil((until - since).total_seconds()))
    model = label(rollout.model_name)
    candidate = f'{{model_name={model}, model_version="{rollout.candidate_version}"}}'
    both = (
        f"{{model_name={model}, "
        f'model_version=~"{rollout.production_version}|{rollout.candidate_version}"}}'
    )
    agreement, difference, calls, p99 = await asyncio.gather(
        prometheus.vector(
            "sum by (agreement) "
            f"(increase(screwops_gateway_rollout_agreement_total{candidate}[{seconds}s]))",
            until,
        ),
        prometheus.vector(
            f"sum(increase(screwops_gateway_rollout_score_difference_sum{candidate}[{seconds}s])) "
            "/ sum(increase(screwops_gateway_rollout_score_difference_count"
            f"{candidate}[{seconds}s]))",
            until,
        ),
        prometheus.vector(
            "sum by (model_version, role, path, outcome) "
            f"(increase(screwops_gateway_model_calls_total{both}[{seconds}s]))",
            until,
        ),
        prometheus.vector(
            "histogram_quantile(0.99, sum by (model_version, role, path, le) "
            f"(increase(screwops_gateway_model_call_duration_seconds_bucket{both}[{seconds}s])))",
            until,
        ),
    )
    counted = {s.labels.get("agreement", ""): round(s.value) for s in agreement}
    mean = difference[0].value if difference and math.isfinite(difference[0].value) else None
    return Comparison(
        since=since,
        until=until,
        agree=counted.get("agree", 0),
        disagree=counted.get("disagree", 0),
        mean_difference=mean,
        sides=_sides(calls, p99),
    )


def _sides(calls: list[Sample], p99: list[Sample]) -> list[Side]:
    """One row per version, role and path, production's first, the response path before the
    off-path scores; a side that made no call in the window is left out."""
    outcomes: dict[tuple[int, str, str], dict[str, int]] = defaultdict(dict)
    for sample in calls:
        key = _side_key(sample)
        outcomes[key][sample.labels.get("outcome", "")] = round(sample.value)
    latency = {_side_key(s): s.value for s in p99 if math.isfinite(s.value)}
    order = {"production": 0, "canary": 1, "shadow": 2}
    rows = [
        Side(
            version=version,
            role=role,
            path=path,
            answered=counts.get("answered", 0),
            no_part=counts.get("no_part", 0),
            failed=counts.get("failed", 0),
            p99_s=latency.get((version, role, path)),
        )
        for (version, role, path), counts in outcomes.items()
    ]
    return sorted(
        (row for row in rows if row.calls),
        key=lambda row: (order.get(row.role, 3), row.path != "response", row.version),
    )


def _side_key(sample: Sample) -> tuple[int, str, str]:
    return (
        int(sample.labels.get("model_version", "0") or 0),
        sample.labels.get("role", ""),
        sample.labels.get("path", ""),
    )
