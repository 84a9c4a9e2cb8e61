"""A tiny SavedModel of the frames contract (``screwops_contracts.models``), built in a test.

Its answers are plain to check: the defect probability is the frame's mean brightness / 255 (times
``scale``, so two versions can differ) and a part is found when any pixel is above 0, so a blank
frame holds no screw. With a ``cutoff`` it is instead the evaluator builders' model
(``tests.unit.evaluator.builders``): a frame is defective when its brightest pixel is darker than
the cutoff, so its accuracy on their pictures is known exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def save_frames_model(
    directory: Path,
    frame_size: int,
    *,
    scale: float = 1.0,
    cutoff: float | None = None,
    steepness: float = 1.0,
) -> Path:
    """Write the model for frames of ``frame_size`` to ``directory``; return it. With ``cutoff``,
    its probability is ``sigmoid(steepness * (cutoff - brightest pixel / 255))``."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, frame_size, frame_size, 1], tf.uint8)

    class FramesModel(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
        def serve(self, frames: Any) -> dict[str, Any]:
            pixels = tf.cast(frames, tf.float32)
            if cutoff is None:
                probability = tf.reduce_mean(pixels, axis=[1, 2]) * (scale / 255.0)
            else:
                brightest = tf.reduce_max(pixels, axis=[1, 2]) / 255.0
                probability = tf.sigmoid(steepness * (cutoff - brightest))
            return {
                "defect_probability": probability,
                "part_found": tf.cast(tf.reduce_max(pixels, axis=[1, 2]) > 0, tf.float32),
            }

    module = FramesModel()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def expected_scores(
    frames: npt.NDArray[np.uint8], *, scale: float = 1.0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """What the model of ``scale`` answers for ``frames`` ([n, S, S, 1]), each [n]."""
    probability = frames.reshape(len(frames), -1).mean(axis=1) * (scale / 255.0)
    found = (frames.reshape(len(frames), -1).max(axis=1) > 0).astype(np.float32)
    return probability.astype(np.float32), found
