"""Finding the screw in a full frame and cutting a fixed-scale strip along it, in TensorFlow ops.

Written in TensorFlow ops so that it can run inside the exported model: the trainer, Triton and
any export then run one graph, and the model takes the decoded frame
(:mod:`screwops_trainer.frames`); ``docs/model.md`` says what it measured.

A screw lies anywhere on the table at any angle and covers a small part of the frame; its defects
are a few pixels wide. The pose is found on a small copy of the frame (the part's pixels stand
out from a wide blur of the background; their second moments give the axis, their extent the
ends, and the wider end is the head), then refined on a finer copy restricted to a band around
the coarse axis, so that the centre and the angle are as precise as the fine copy's pixels. The
strip is cut at a fixed scale (strip pixels per frame pixel), not stretched to the screw's
length: a thread pitch then has the same number of pixels on every screw, which is what lets
a model compare one screw's thread with another's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

__all__ = ["Geometry", "Pose", "find_pose", "strip"]

# The coarse pose is found on a copy of this side; the refinement on one of twice this side.
COARSE_SIDE = 256
# The lighting varies slowly over the frame and the screw is thin: a blur this wide (of the
# coarse copy) is background.
_BACKGROUND_RADIUS = 24
# A pixel belongs to the part when it differs from the background by more than this (of 1) ...
_MIN_CONTRAST = 20.0 / 255.0
# ... and by more than this many times the frame's median difference, for noisy frames.
_NOISE_FACTOR = 6.0
# A dim frame (its grey between these quantiles of the coarse copy spans less than
# _USUAL_RANGE) is stretched to span it before the part is looked for, so a darker scene finds the
# same screw; a range narrower than _MIN_RANGE is stretched no further (a blank frame stays
# blank, a dark one's noise is not made into a part). Frames of usual contrast are left alone.
_RANGE_QUANTILES = (0.01, 0.999)
_USUAL_RANGE = 0.3
_MIN_RANGE = 4.0 / 255.0
# Fewer part pixels than this (of the coarse copy): no screw in the frame.
MIN_PART_PIXELS = 30
# Percentiles of the part's extent along its axis taken as its ends (robust to a stray pixel).
_END_PERCENTILE = 0.005
# The refinement looks for part pixels within this many coarse pixels of the coarse axis line
# (across) and of the coarse ends (along).
_REFINE_BAND = 12.0


@dataclass(frozen=True)
class Geometry:
    """The strip a model looks at, as fractions of the frame's side and its pixel size.

    ``length`` and ``width`` are how much of the frame the strip covers along and across the
    screw's axis; ``pixels_along`` is the strip's width in pixels. The scale (strip pixels per
    frame pixel) is fixed by these and the frame's side, the same for every screw of a model.
    """

    length: float = 0.8
    width: float = 0.24
    pixels_along: int = 384

    @property
    def pixels_across(self) -> int:
        return max(8, round(self.pixels_along * self.width / self.length / 8) * 8)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the strip: across the axis, along it."""
        return self.pixels_across, self.pixels_along


@dataclass(frozen=True)
class Pose:
    """Where each screw of a batch lies, in frame pixels; ``found`` is False for an empty frame.

    Every field is a [n] tensor. The axis runs from the head to the tip.
    """

    centre_x: tf.Tensor
    centre_y: tf.Tensor
    axis_x: tf.Tensor
    axis_y: tf.Tensor
    length: tf.Tensor
    found: tf.Tensor


def _quantile(
    values: tf.Tensor, weight: tf.Tensor, q: float, low: float, high: float, bins: int
) -> tf.Tensor:
    """Per-row weighted ``q``-quantile of a [n, k] tensor, to ``(high - low) / bins``.

    A histogram, not a sort: sorting a frame's pixels costs far more in TensorFlow than the
    rest of the alignment, and a quantile to within a bin is all the alignment needs.
    """
    n = tf.shape(values)[0]
    width = (high - low) / bins
    index = tf.clip_by_value(tf.cast(tf.floor((values - low) / width), tf.int32), 0, bins - 1)
    rows = tf.range(n)[:, None] * bins
    histogram = tf.reshape(
        tf.math.unsorted_segment_sum(
            tf.reshape(weight, [-1]), tf.reshape(index + rows, [-1]), n * bins
        ),
        [n, bins],
    )
    cumulative = tf.cumsum(histogram, axis=1)
    target = q * cumulative[:, -1:]
    first = tf.argmax(tf.cast(cumulative >= target, tf.int32), axis=1, output_type=tf.int32)
    return low + (tf.cast(first, tf.float32) + 0.5) * width


def _median(values: tf.Tensor) -> tf.Tensor:
    """Per-row median of a [n, k] tensor of values in [0, 1], to 1/1024."""
    return _quantile(values, tf.ones_like(values), 0.5, 0.0, 1.0, 1024)


def _box_blur(images: tf.Tensor, radius: int) -> tf.Tensor:
    """Mean over a (2 radius + 1) square window, over the pixels inside the image only.

    Running sums make it cost the same whatever the radius; a pooling op of this width costs
    thousands of additions per pixel.
    """

    def along(values: tf.Tensor, axis: int) -> tf.Tensor:
        side = values.shape[axis]
        padding = [[0, 0]] * 4
        padding[axis] = [1, 0]
        running = tf.pad(tf.cumsum(values, axis=axis), padding)
        upper = tf.minimum(tf.range(side) + radius + 1, side)
        lower = tf.maximum(tf.range(side) - radius, 0)
        return tf.gather(running, upper, axis=axis) - tf.gather(running, lower, axis=axis)

    ones = tf.ones_like(images[:1])
    return along(along(images, 1), 2) / along(along(ones, 1), 2)


def _stretch(small: tf.Tensor) -> Callable[[tf.Tensor], tf.Tensor]:
    """What stretches a copy of each frame whose range of grey (measured on ``small``, a copy)
    is dim. Area averaging is linear, so stretching the copies is stretching the frame, without
    a pass over its every pixel."""
    n = tf.shape(small)[0]
    flat = tf.reshape(small, [n, -1])
    low, high = (_quantile(flat, tf.ones_like(flat), q, 0.0, 1.0, 1024) for q in _RANGE_QUANTILES)
    gain = tf.maximum(1.0, _USUAL_RANGE / tf.maximum(high - low, _MIN_RANGE))

    def stretched(copy: tf.Tensor) -> tf.Tensor:
        return (copy - low[:, None, None, None]) * gain[:, None, None, None]

    return stretched


def _part(small: tf.Tensor, radius: int) -> tf.Tensor:
    """[n, s, s] 0/1 mask of the pixels that stand out from the background."""
    difference = tf.abs(small - _box_blur(small, radius))[..., 0]
    n = tf.shape(difference)[0]
    typical = _median(tf.reshape(difference, [n, -1]))
    floor = tf.maximum(_MIN_CONTRAST, _NOISE_FACTOR * typical)
    return tf.cast(difference > floor[:, None, None], tf.float32)


def _ends(along: tf.Tensor, weight: tf.Tensor, reach: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Robust low and high ends of ``along`` (within ``-reach..reach``) over the part, per row."""
    bins = max(64, round(4 * reach))
    low = _quantile(along, weight, _END_PERCENTILE, -reach, reach, bins)
    high = _quantile(along, weight, 1.0 - _END_PERCENTILE, -reach, reach, bins)
    return low, high


def _moments(
    weight: tf.Tensor, xs: tf.Tensor, ys: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Count, mean and principal axis of the weighted pixels of each row."""
    count = tf.reduce_sum(weight, axis=1)
    safe = tf.maximum(count, 1.0)
    mean_x = tf.reduce_sum(weight * xs, axis=1) / safe
    mean_y = tf.reduce_sum(weight * ys, axis=1) / safe
    dx, dy = xs - mean_x[:, None], ys - mean_y[:, None]
    cxx = tf.reduce_sum(weight * dx * dx, axis=1) / safe
    cyy = tf.reduce_sum(weight * dy * dy, axis=1) / safe
    cxy = tf.reduce_sum(weight * dx * dy, axis=1) / safe
    angle = 0.5 * tf.atan2(2.0 * cxy, cxx - cyy)
    return count, mean_x, mean_y, tf.cos(angle), tf.sin(angle)


def _grid(side: int, scale: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Frame coordinates of the pixel centres of a ``side`` x ``side`` copy, flattened."""
    centres = (tf.range(side, dtype=tf.float32) + 0.5) * scale
    ys, xs = tf.meshgrid(centres, centres, indexing="ij")
    return tf.reshape(xs, [1, -1]), tf.reshape(ys, [1, -1])


def find_pose(frames: tf.Tensor) -> Pose:
    """The pose of the screw in each frame of a [n, side, side, 1] float32 batch in [0, 1]."""
    side = frames.shape[1]
    if side is None or frames.shape[2] != side:
        raise ValueError(f"frames must be square with a static side, got {frames.shape}")
    n = tf.shape(frames)[0]
    coarse_side = min(COARSE_SIDE, side)
    small = tf.image.resize(frames, [coarse_side, coarse_side], method="area")
    stretched = _stretch(small)
    small = stretched(small)
    weight = tf.reshape(_part(small, _BACKGROUND_RADIUS), [n, -1])
    xs, ys = _grid(coarse_side, side / coarse_side)
    count, mean_x, mean_y, axis_x, axis_y = _moments(weight, xs, ys)
    along = (xs - mean_x[:, None]) * axis_x[:, None] + (ys - mean_y[:, None]) * axis_y[:, None]
    across = (ys - mean_y[:, None]) * axis_x[:, None] - (xs - mean_x[:, None]) * axis_y[:, None]
    low, high = _ends(along, weight, 1.5 * side)

    # Refinement: the part on a copy twice as fine, near the coarse axis and between its ends.
    fine_side = min(2 * coarse_side, side)
    fine = stretched(tf.image.resize(frames, [fine_side, fine_side], method="area"))
    fine_weight = tf.reshape(
        _part(fine, round(_BACKGROUND_RADIUS * fine_side / coarse_side)), [n, -1]
    )
    fxs, fys = _grid(fine_side, side / fine_side)
    band = _REFINE_BAND * side / coarse_side
    f_along = (fxs - mean_x[:, None]) * axis_x[:, None] + (fys - mean_y[:, None]) * axis_y[:, None]
    f_across = (fys - mean_y[:, None]) * axis_x[:, None] - (fxs - mean_x[:, None]) * axis_y[:, None]
    half_width = tf.reduce_max(tf.abs(across) * weight, axis=1)
    near = tf.cast(
        (f_along > (low - band)[:, None])
        & (f_along < (high + band)[:, None])
        & (tf.abs(f_across) < (half_width + band)[:, None]),
        tf.float32,
    )
    fine_weight = fine_weight * near
    f_count, f_mean_x, f_mean_y, f_axis_x, f_axis_y = _moments(fine_weight, fxs, fys)
    # The fine pass keeps the coarse one's direction (moments give an axis, not a sense).
    same = tf.sign(f_axis_x * axis_x + f_axis_y * axis_y)
    same = tf.where(same == 0, tf.ones_like(same), same)
    f_axis_x, f_axis_y = f_axis_x * same, f_axis_y * same
    f_along = (fxs - f_mean_x[:, None]) * f_axis_x[:, None] + (fys - f_mean_y[:, None]) * f_axis_y[
        :, None
    ]
    f_across = tf.abs(
        (fys - f_mean_y[:, None]) * f_axis_x[:, None]
        - (fxs - f_mean_x[:, None]) * f_axis_y[:, None]
    )
    f_low, f_high = _ends(f_along, fine_weight, 1.5 * side)
    middle = (f_low + f_high) / 2.0
    # The head is the wide end: where the part spreads further across its axis.
    first = tf.cast(f_along < middle[:, None], tf.float32) * fine_weight
    second = fine_weight - first
    spread_first = tf.reduce_sum(f_across * first, axis=1) / tf.maximum(
        tf.reduce_sum(first, axis=1), 1.0
    )
    spread_second = tf.reduce_sum(f_across * second, axis=1) / tf.maximum(
        tf.reduce_sum(second, axis=1), 1.0
    )
    sense = tf.where(spread_first < spread_second, -1.0, 1.0)
    found = (count >= MIN_PART_PIXELS) & (f_count >= MIN_PART_PIXELS)
    return Pose(
        centre_x=f_mean_x + middle * f_axis_x,
        centre_y=f_mean_y + middle * f_axis_y,
        axis_x=f_axis_x * sense,
        axis_y=f_axis_y * sense,
        length=f_high - f_low,
        found=found,
    )


def strip(frames: tf.Tensor, pose: Pose, geometry: Geometry) -> tf.Tensor:
    """The [n, h, w, 1] strip along each screw's axis (head on the left), at the fixed scale.

    Outside the frame the strip is filled with the frame's median grey, so a screw near the edge
    is not framed by a black border the model never saw in training.
    """
    side = frames.shape[1]
    height, width = geometry.shape
    scale = geometry.length * side / width  # frame pixels per strip pixel, both directions
    if scale > 1.0:
        # Sampling a frame more coarsely than its pixels would skip a hairline scratch: average
        # the frame down to the strip's scale first (area), then cut at one pixel per pixel.
        reduced = max(1, round(side / scale))
        frames = tf.image.resize(frames, [reduced, reduced], method="area")
        ratio = reduced / side
        pose = Pose(
            centre_x=pose.centre_x * ratio,
            centre_y=pose.centre_y * ratio,
            axis_x=pose.axis_x,
            axis_y=pose.axis_y,
            length=pose.length * ratio,
            found=pose.found,
        )
        scale *= ratio
    n = tf.shape(frames)[0]
    # Strip pixel (x, y) samples the frame at
    # centre + scale * ((x - w/2) * axis + (y - h/2) * normal).
    a0 = scale * pose.axis_x
    a1 = -scale * pose.axis_y
    b0 = scale * pose.axis_y
    b1 = scale * pose.axis_x
    half_w, half_h = (width - 1) / 2.0, (height - 1) / 2.0
    a2 = pose.centre_x - 0.5 - a0 * half_w - a1 * half_h
    b2 = pose.centre_y - 0.5 - b0 * half_w - b1 * half_h
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    # The transform fills with one constant: cutting (frame - its median) and filling with 0
    # gives each frame its own median around the edge.
    median = _median(tf.reshape(frames, [n, -1]))[:, None, None, None]
    cut = tf.raw_ops.ImageProjectiveTransformV3(
        images=frames - median,
        transforms=transforms,
        output_shape=tf.constant([height, width], tf.int32),
        fill_value=tf.constant(0.0),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    cut = cut + median
    return tf.ensure_shape(cut, [None, height, width, 1])
