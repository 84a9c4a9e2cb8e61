"""What a line supervisor looks at first, per model: how fast the line inspects, how often it
rejects against what the model was expected to reject, and what the monitor and Prometheus's
alert rules say is wrong, all from Prometheus.

Sources, and why:

* Inspections per minute and the last hour's defect rate come from the gateways' verdict
  counter (``screwops_gateway_verdicts_total``, by model name, version, verdict and line),
  summed over every replica. The monitor's own ``defect_rate`` signal is over a window of a
  fixed number of inspections, not of time, so it cannot answer "the last hour"; and a
  replica's ``/metrics`` is its share only, reset when it restarts. A frame in which the model
  found no screw gets no verdict, so it is not counted in either.
* The baseline is the monitor's (``screwops_monitor_reference``): ``evaluation_defect_rate``,
  the share of the version's test split its threshold rejects, which is the rate the model was
  approved at, with ``defect_rate``, the share of its first inspections in production (its
  reference window), beside it. The monitor computes both from what it stores (the evaluation's
  scores and the reference window) and exports them once its reference window is full; before
  that there is no baseline to show. The bounds the monitor alarms at are its
  ``screwops_monitor_signal_threshold`` for ``defect_rate``.
* Drift signals are the monitor's gauges (``screwops_monitor_signal`` and
  ``screwops_monitor_signal_fired``: each signal's value and whether it fired, which is what
  announced ``model.degraded``); open alerts are Prometheus's ``ALERTS`` series, every rule
  firing now, the model's (labelled with it, as ``ScrewOpsModelDegraded`` is) apart from the
  stack's.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from screwops_console.prometheus import Prometheus, Sample, label

RATE_WINDOW = "5m"
"""What inspections per minute are averaged over: long enough for a few scrapes."""
DEFECT_WINDOW = "1h"
MONITOR = "screwops_monitor_(signal|signal_fired|signal_threshold|reference)"
BASELINE = "evaluation_defect_rate"
REFERENCE = "defect_rate"
DEFECT_RATE_SIGNAL = "defect_rate"
STACK = ""
"""The model an alert without a ``model`` label belongs to: the stack's, shown apart."""


@dataclass(frozen=True)
class Signal:
    """One of the monitor's signals for a version: its value and whether its alarm fired."""

    version: str
    name: str
    value: float
    fired: bool
    bounds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    """A rule firing now, by its name and labels."""

    name: str
    severity: str
    labels: dict[str, str]

    @property
    def about(self) -> str:
        """The labels that say what fired, less the ones every alert carries."""
        left_out = {"__name__", "alertname", "alertstate", "severity"}
        return ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()) if k not in left_out)


@dataclass(frozen=True)
class LineFigures:
    """A model's figures from Prometheus; None where no series answered (nothing counted)."""

    per_minute: float | None
    inspected: int
    defects: int
    baseline: float | None
    reference: float | None
    bounds: dict[str, float]
    signals: list[Signal]

    @property
    def defect_rate(self) -> float | None:
        return self.defects / self.inspected if self.inspected else None

    @property
    def fired(self) -> list[Signal]:
        return [signal for signal in self.signals if signal.fired]


async def line_figures(
    prometheus: Prometheus, model_name: str, version: int | None, now: datetime
) -> LineFigures:
    """``model_name``'s figures at ``now``; the baseline and signals are those of ``version``
    (production's), or of the newest version the monitor watches when production is unknown."""
    model = label(model_name)
    verdicts = f"screwops_gateway_verdicts_total{{model_name={model}}}"
    rate, hour, monitor = await asyncio.gather(
        prometheus.vector(f"sum(rate({verdicts}[{RATE_WINDOW}])) * 60", now),
        prometheus.vector(f"sum by (verdict) (increase({verdicts}[{DEFECT_WINDOW}]))", now),
        prometheus.vector(f'{{__name__=~"{MONITOR}", model={model}}}', now),
    )
    counted = {s.labels.get("verdict", ""): round(s.value) for s in hour}
    watched = _version(monitor, version)
    mine = [s for s in monitor if s.labels.get("version") == watched]
    figures = {
        s.labels.get("figure", ""): s.value for s in _named(mine, "screwops_monitor_reference")
    }
    signals = _signals(mine)
    defect_rate = next((s for s in signals if s.name == DEFECT_RATE_SIGNAL), None)
    return LineFigures(
        per_minute=rate[0].value if rate else None,
        inspected=sum(counted.values()),
        defects=counted.get("DEFECT", 0),
        baseline=figures.get(BASELINE),
        reference=figures.get(REFERENCE),
        bounds=defect_rate.bounds if defect_rate is not None else {},
        signals=signals,
    )


def _version(monitor: list[Sample], version: int | None) -> str:
    if version is not None:
        return str(version)
    versions = [int(s.labels["version"]) for s in monitor if s.labels.get("version", "").isdigit()]
    return str(max(versions)) if versions else ""


def _named(samples: list[Sample], name: str) -> list[Sample]:
    return [s for s in samples if s.labels.get("__name__") == name]


def _signals(samples: list[Sample]) -> list[Signal]:
    fired = {
        s.labels.get("signal", ""): s.value == 1
        for s in _named(samples, "screwops_monitor_signal_fired")
    }
    bounds: dict[str, dict[str, float]] = defaultdict(dict)
    for s in _named(samples, "screwops_monitor_signal_threshold"):
        bounds[s.labels.get("signal", "")][s.labels.get("bound", "")] = s.value
    return sorted(
        (
            Signal(
                version=s.labels.get("version", ""),
                name=s.labels.get("signal", ""),
                value=s.value,
                fired=fired.get(s.labels.get("signal", ""), False),
                bounds=bounds[s.labels.get("signal", "")],
            )
            for s in _named(samples, "screwops_monitor_signal")
        ),
        key=lambda signal: signal.name,
    )


async def open_alerts(prometheus: Prometheus, now: datetime) -> dict[str, list[Alert]]:
    """Every alert firing at ``now``, by the model it names (:data:`STACK`: none)."""
    found: dict[str, list[Alert]] = defaultdict(list)
    for s in await prometheus.vector('ALERTS{alertstate="firing"}', now):
        alert = Alert(
            name=s.labels.get("alertname", ""),
            severity=s.labels.get("severity", ""),
            labels=s.labels,
        )
        found[s.labels.get("model", STACK)].append(alert)
    for alerts in found.values():
        alerts.sort(key=lambda a: (a.name, a.about))
    return dict(found)
