"""The served graph: a decoded frame in, the screw found and cut into a strip, its score out.

Finding the screw and cutting its strip (:mod:`screwops_trainer.align`) are part of the exported
SavedModel, so the trainer, Triton and any export run one graph and the gateway only fits the
image to the model's frame (``screwops_imaging.fit_frame``). The contract is
``screwops_contracts.models``': ``frames`` uint8 ``[n, S, S, 1]`` in, ``defect_probability`` and
``part_found`` float32 ``[n, 1]`` out.

Both kinds of model are served through :class:`FrameModel`: only what scores a strip differs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf
from screwops_contracts.models import (
    FRAMES_INPUT,
    PART_FOUND_OUTPUT,
    PROBABILITY_OUTPUT,
    SERVING_SIGNATURE,
)

from screwops_trainer.align import Geometry, find_pose, strip

__all__ = ["FrameModel", "export_frames", "geometry", "strips"]

# The strip covers this share of the frame's side along the screw (align.Geometry's length).
_STRIP_LENGTH = 0.8
_ALIGN_BATCH = 16

Frames = npt.NDArray[np.uint8]
Strips = npt.NDArray[np.float32]


def geometry(size: int, *, most_pixels_along: int) -> Geometry:
    """The strip for frames of ``size``: one strip pixel per frame pixel, or coarser (area
    averaged) when that would exceed ``most_pixels_along``; the same scale for every screw."""
    return Geometry(
        length=_STRIP_LENGTH, pixels_along=min(round(_STRIP_LENGTH * size), most_pixels_along)
    )


def _to_unit(frames: tf.Tensor) -> tf.Tensor:
    return tf.cast(frames, tf.float32) / 255.0


def strips(frames: Frames, shape: Geometry) -> tuple[Strips, npt.NDArray[np.bool_]]:
    """Each frame's strip in [0, 1] and whether a screw was found, in batches (blocking)."""
    height, width = shape.shape
    cut, found = [np.zeros((0, height, width, 1), np.float32)], [np.zeros(0, bool)]
    for start in range(0, len(frames), _ALIGN_BATCH):
        batch = _to_unit(tf.constant(frames[start : start + _ALIGN_BATCH]))
        pose = find_pose(batch)
        cut.append(strip(batch, pose, shape).numpy())
        found.append(pose.found.numpy())
    return np.concatenate(cut).astype(np.float32), np.concatenate(found)


class FrameModel(tf.Module):  # type: ignore[misc]  # tensorflow is untyped
    """``score`` (strips in [0, 1] -> [n] probabilities) behind the frames contract."""

    def __init__(
        self, score: Callable[[tf.Tensor], tf.Tensor], size: int, shape: Geometry, keep: object
    ) -> None:
        super().__init__()
        self._score = score
        self._shape = shape
        self.kept = keep  # tracked, so the scorer's variables are saved with the graph
        spec = tf.TensorSpec([None, size, size, 1], tf.uint8, name=FRAMES_INPUT)
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, frames: tf.Tensor) -> dict[str, tf.Tensor]:
        unit = _to_unit(frames)
        pose = find_pose(unit)
        probability = tf.reshape(self._score(strip(unit, pose, self._shape)), [-1, 1])
        found = tf.reshape(tf.cast(pose.found, tf.float32), [-1, 1])
        return {PROBABILITY_OUTPUT: probability, PART_FOUND_OUTPUT: found}


def export_frames(model: FrameModel, directory: Path) -> Path:
    """Write ``model`` as the SavedModel Triton serves (signature ``serving_default``).

    Keras' export archive writes it: it tracks every variable a Keras network holds (its
    augmentation's seed state too, which a plain ``tf.saved_model.save`` of a module around the
    network cannot reach), and a plain ``tf.Module`` scorer alike.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_SIGNATURE, model.serve)
    archive.write_out(str(directory), verbose=False)
    return directory
