"""Metrics as a person reads them: named, counts as integers, rates as percentages, and beside
each one the evaluator's gate check that judged it, with its floor.

The registry and the trainer hand metrics over as a flat map of floats (``SplitMetrics.flat``:
``accuracy``, ``recall_<defect type>``, ``test_images``, ``accuracy_ci_low``…), where a count
and a rate look alike. Which gate check judges which metric is the evaluator's (its check
names, in ``screwops_evaluator.gate``); a service does not import another, so the pairs are
named here, and a metric with no check simply shows none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from screwops_console.records import Check, GateVerdict

COUNTS = {
    "test_images": "test images",
    "true_positives": "defects caught",
    "false_negatives": "defects missed",
    "false_positives": "good screws rejected",
    "true_negatives": "good screws passed",
    "no_part_images": "no screw found",
}
RATES = {
    "accuracy": "accuracy",
    "val_accuracy": "validation accuracy",
    "precision": "precision",
    "recall": "defect recall",
    "f1": "F1",
    "champion_accuracy": "production's accuracy",
    "champion_recall": "production's defect recall",
}
SCORES = {"roc_auc": "ROC AUC", "auc": "ROC AUC", "threshold": "threshold"}
"""In [0, 1] but not a share of anything, so shown as a number."""

GATE_CHECKS = {
    "test_images": "test_split_size",
    "accuracy": "accuracy",
    "recall": "defect_recall",
    "roc_auc": "roc_auc",
    "champion_accuracy": "champion_comparison",
    "champion_recall": "champion_recall_comparison",
}
TYPE_RECALL = "recall_"
TYPE_RECALL_CHECK = "defect_type_recall"
INTERVAL = ("_ci_low", "_ci_high")


@dataclass(frozen=True)
class Figure:
    """One metric ready to show, and the gate check that judged it (None: not gated)."""

    name: str
    label: str
    text: str
    interval: str
    check: Check | None

    @property
    def verdict(self) -> str:
        """``pass``, ``fail`` or empty when no gate check judged the metric."""
        if self.check is None:
            return ""
        return "pass" if self.check.passed else "fail"


def figures(metrics: Mapping[str, float], gate: GateVerdict | None = None) -> list[Figure]:
    """``metrics`` as figures in a reading order (rates, then scores, then counts, then any
    other), each rate's 95 % interval folded into it."""
    checks = {check.name: check for check in gate.checks} if gate is not None else {}
    shown = [name for name in metrics if not name.endswith(INTERVAL)]
    order = {name: rank for rank, name in enumerate([*RATES, *SCORES, *COUNTS])}
    shown.sort(key=lambda name: (order.get(name, len(order)), name))
    return [
        Figure(
            name=name,
            label=_label(name),
            text=_text(name, metrics[name]),
            interval=_interval(name, metrics),
            check=checks.get(_check_name(name)),
        )
        for name in shown
    ]


def _label(name: str) -> str:
    for names in (RATES, SCORES, COUNTS):
        if name in names:
            return names[name]
    if name.startswith(TYPE_RECALL):
        return f"{name.removeprefix(TYPE_RECALL)} recall"
    return name.replace("_", " ")


def _is_rate(name: str) -> bool:
    return name in RATES or name.startswith(TYPE_RECALL)


def _text(name: str, value: float) -> str:
    if name in COUNTS:
        return f"{round(value):d}"
    if _is_rate(name):
        return percent(value)
    if name == "threshold":
        return f"{value:.4f}"
    return f"{value:.3f}"


def percent(value: float) -> str:
    """A share in [0, 1] as a percentage to one decimal."""
    return f"{100 * value:.1f} %"


def _interval(name: str, metrics: Mapping[str, float]) -> str:
    low, high = (metrics.get(f"{name}{end}") for end in INTERVAL)
    if low is None or high is None:
        return ""
    if _is_rate(name):
        return f"{100 * low:.1f} to {100 * high:.1f} %"
    return f"{low:.3f} to {high:.3f}"


def _check_name(name: str) -> str:
    if name.startswith(TYPE_RECALL):
        return TYPE_RECALL_CHECK
    return GATE_CHECKS.get(name, "")
