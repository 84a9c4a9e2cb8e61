"""Metrics of a model's defect probabilities against the images' labels, each headline number
with its 95 % interval.

A lib, not the evaluator's module, so that the quality benchmark scores the hold-out set with the
very functions the gate scores the test split with (libs never import services).
"""

from screwops_metrics.scoring import (
    CONFIDENCE,
    UNSPECIFIED_DEFECT,
    ConfusionMatrix,
    DefectRecall,
    Interval,
    LabeledImage,
    Probabilities,
    SplitMetrics,
    auroc_interval,
    compute_metrics,
    wilson,
)

__all__ = [
    "CONFIDENCE",
    "UNSPECIFIED_DEFECT",
    "ConfusionMatrix",
    "DefectRecall",
    "Interval",
    "LabeledImage",
    "Probabilities",
    "SplitMetrics",
    "auroc_interval",
    "compute_metrics",
    "wilson",
]
