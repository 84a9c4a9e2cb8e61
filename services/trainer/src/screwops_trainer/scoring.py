"""Scores of an exported model: its SavedModel's serving signature, called as Triton calls it.

The threshold is chosen on what the served artifact answers, not on the in-memory network, so
whatever the export adds (a good-only model's calibration to [0, 1]) is part of the scores the
threshold is set on, and both kinds of model are scored alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import tensorflow as tf

__all__ = ["SIGNATURE", "score_saved_model"]

SIGNATURE = "serving_default"  # the one Triton's model.py serves (screwops_serving.triton_model)


def score_saved_model(
    directory: Path, images: npt.NDArray[np.float32], *, batch_size: int = 64
) -> npt.NDArray[np.float32]:
    """One score per image from the SavedModel in ``directory``; blocking, CPU-bound."""
    if not len(images):
        return np.zeros(0, dtype=np.float32)
    signature = tf.saved_model.load(str(directory)).signatures[SIGNATURE]
    _, arguments = signature.structured_input_signature
    (argument,) = arguments
    (output,) = signature.structured_outputs
    parts = [
        np.asarray(signature(**{argument: tf.constant(images[start : start + batch_size])})[output])
        for start in range(0, len(images), batch_size)
    ]
    scores: npt.NDArray[np.float32] = np.concatenate(parts).reshape(-1).astype(np.float32)
    return scores
