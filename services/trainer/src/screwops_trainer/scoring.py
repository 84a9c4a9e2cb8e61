"""Scores of an exported model: its SavedModel's serving signature, called as Triton calls it.

The threshold is chosen on what the served artifact answers, not on the in-memory network, so
whatever the export adds (the alignment, a good-only model's calibration to [0, 1]) is part of
the scores the threshold is set on, and both kinds of model are scored alike. A frame in which
the model finds no screw scores 1.0, as the evaluator counts it: a line rejects a part it cannot
see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import tensorflow as tf
from screwops_contracts.models import (
    FRAMES_INPUT,
    PART_FOUND_MIN,
    PART_FOUND_OUTPUT,
    PROBABILITY_OUTPUT,
    SERVING_SIGNATURE,
)

__all__ = ["score_saved_model"]


def score_saved_model(
    directory: Path, frames: npt.NDArray[np.uint8], *, batch_size: int = 16
) -> npt.NDArray[np.float32]:
    """One score per frame from the SavedModel in ``directory``; blocking, CPU-bound."""
    if not len(frames):
        return np.zeros(0, dtype=np.float32)
    signature = tf.saved_model.load(str(directory)).signatures[SERVING_SIGNATURE]
    parts = []
    for start in range(0, len(frames), batch_size):
        out = signature(**{FRAMES_INPUT: tf.constant(frames[start : start + batch_size])})
        found = np.asarray(out[PART_FOUND_OUTPUT]).reshape(-1) >= PART_FOUND_MIN
        probability = np.asarray(out[PROBABILITY_OUTPUT]).reshape(-1)
        parts.append(np.where(found, probability, 1.0))
    scores: npt.NDArray[np.float32] = np.concatenate(parts).astype(np.float32)
    return scores
