"""The good-only model: a screw's patches against the same places of good screws (PatchCore-style).

A line with almost no defect images can still say what a good screw looks like. Each strip
(the screw cut at a fixed scale, head left, :mod:`screwops_trainer.align`) becomes a grid of
patch features (:mod:`screwops_trainer.backbone`, ImageNet features; one patch per 8 strip
pixels); a patch's anomaly is its distance to the nearest patch of the good screws in the bank
**near the same place** of their strips: within ``reach_along`` patches along the axis (a
thread's phase differs from screw to screw by up to half a pitch) and one across. Comparing
places rather than the whole bank keeps a head's patch from matching a thread's, and costs a
fraction of a global search. Only the ``neighbours`` bank screws most like the query as a whole
are searched.

Places differ in how much good screws vary there: a thread crest or the outline's edge moves a
little with every screw, a flat head does not. So each place's distance is standardised by the
spread of good screws' distances at that place (PaDiM's per-position statistics on PatchCore's
distances), learnt from the training screws themselves, each compared with the bank without
itself. The screw's score is its worst standardised patch.

Measured on the ``mvtec_screw`` preset's test split and a hold-out slice (``docs/model.md``):
this is the best of the methods tried on subtle synthetic defects, and still far from the issue's
floors; on real photographs PatchCore-style detectors are the state of the art.

The score is calibrated to [0, 1] on good validation screws: 0.5 at their 99th percentile (the
good-only operating point's neighbourhood), their median near 0.1. The bank is capped at
``bank_size`` screws, chosen to cover the training screws' variety (farthest first), so the
SavedModel's size and Triton's load time do not grow with the data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from screwops_trainer.align import Geometry
from screwops_trainer.backbone import STRIDE, Backbone, load_backbone
from screwops_trainer.frames import FrameModel, export_frames, geometry, strips
from screwops_trainer.params import TrainingParams

__all__ = ["GoodOnly", "PatchScorer", "fit"]

Array = npt.NDArray[np.float32]
# Distances within this far of the grid's edge are not scored: the strip's border patches see
# the padding of the network's convolutions.
_BORDER = 1
# A large distance for bank places outside the reach.
_FAR = 1e9
# A place's spread is at least this share of the mean spread: where good screws barely vary, a
# standardised distance would otherwise turn sensor noise into a defect.
_SPREAD_FLOOR = 0.1
# A place's mean and variance are shrunk towards those of all places as if this many screws had
# shown them: a few dozen good screws estimate a place poorly (measured: the standardisation
# then loses to the plain distance), a few hundred well.
_PRIOR_SCREWS = 64
_FEATURE_BATCH = 8


def _in_batches(compute: Callable[..., tf.Tensor], *values: npt.NDArray[Any]) -> Array:
    """``compute`` over ``values`` (arrays of one length, sliced alike) a few rows at a time,
    to bound memory; the results joined."""
    parts = [
        compute(*(tf.constant(v[start : start + _FEATURE_BATCH]) for v in values)).numpy()
        for start in range(0, len(values[0]), _FEATURE_BATCH)
    ]
    joined: Array = np.concatenate(parts).astype(np.float32)
    return joined


def features(backbone: Backbone, cut: Array) -> Array:
    """Feature maps of strips ``cut`` ([n, h, w, 1] in [0, 1])."""
    return _in_batches(backbone.features, cut)


class PatchScorer(tf.Module):  # type: ignore[misc]  # tensorflow is untyped
    """Strips in [0, 1] -> [n] calibrated scores; its arrays are saved as variables."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        mean: Array,
        projection: Array,
        bank: Array,
        neighbours: int,
        reach_along: int,
    ) -> None:
        super().__init__()
        self._backbone = backbone
        self.mean = tf.Variable(mean, trainable=False)
        self.projection = tf.Variable(projection, trainable=False)
        self.bank = tf.Variable(bank, trainable=False)  # [screws, rows, cols, dims]
        self.overview = tf.Variable(bank.mean(axis=(1, 2)), trainable=False)
        self.norms = tf.Variable(np.sum(bank * bank, axis=-1), trainable=False)
        # Each place's distance of good screws: its mean and spread (set by standardise).
        self.place_mean = tf.Variable(np.zeros(bank.shape[1:3], np.float32), trainable=False)
        self.place_spread = tf.Variable(np.ones(bank.shape[1:3], np.float32), trainable=False)
        # Calibration: the good validation scores' 99th percentile, and the scale that puts
        # their median near 0.1 (set by calibrate).
        self.centre = tf.Variable(0.0, trainable=False)
        self.spread = tf.Variable(1.0, trainable=False)
        # A bank screw scored for the standardisation leaves itself out, so one fewer.
        self._neighbours = max(1, min(neighbours, bank.shape[0] - 1))
        self._reach_along = reach_along
        self._rows, self._cols = int(bank.shape[1]), int(bank.shape[2])

    def project(self, maps: tf.Tensor) -> tf.Tensor:
        """Feature maps -> the bank's space: centred, to its main directions."""
        return tf.einsum("nhwc,cd->nhwd", maps - self.mean, self.projection)

    def distances(self, strips: tf.Tensor) -> tf.Tensor:
        """[n, rows, cols]: each patch's distance to the nearest bank patch near its place."""
        projected = self.project(self._backbone.features(strips))
        return self.nearest(projected, tf.fill([tf.shape(projected)[0]], -1))

    def nearest(self, projected: tf.Tensor, own: tf.Tensor) -> tf.Tensor:
        """[n, rows, cols] distances of projected queries; query i never searches bank screw
        ``own[i]`` (itself, when a bank screw is scored; -1: none)."""
        cols = np.arange(self._cols)
        beyond = np.abs(cols[:, None] - cols[None, :]) > self._reach_along
        outside = tf.constant(np.where(beyond, _FAR, 0.0).astype(np.float32)[None, :, None, :])
        screws = tf.range(tf.shape(self.bank)[0])

        def one(pair: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
            query, itself = pair
            overall = tf.reduce_mean(query, axis=[0, 1])
            gap = tf.reduce_sum(tf.square(self.overview - overall), axis=-1)
            gap = tf.where(tf.equal(screws, itself), tf.constant(math.inf), gap)
            _, nearest = tf.math.top_k(-gap, k=self._neighbours)
            chosen = tf.gather(self.bank, nearest)
            chosen_norms = tf.gather(self.norms, nearest)
            query_norms = tf.reduce_sum(query * query, axis=-1)[:, :, None, None]
            best = tf.fill([self._rows, self._cols], tf.constant(math.inf))
            for shift in (-1, 0, 1):  # one patch across: the strip's centring is a pixel off
                moved = tf.roll(chosen, shift, axis=1)
                moved_norms = tf.transpose(tf.roll(chosen_norms, shift, axis=1), [1, 0, 2])
                inner = tf.einsum("hwd,khvd->hwkv", query, moved)
                squared = query_norms + moved_norms[:, None, :, :] - 2.0 * inner + outside
                best = tf.minimum(best, tf.reduce_min(squared, axis=[2, 3]))
            return tf.sqrt(tf.maximum(best, 0.0))

        spec = tf.TensorSpec([self._rows, self._cols], tf.float32)
        return tf.map_fn(one, (projected, own), fn_output_signature=spec)

    def standardise(self, good: Array) -> None:
        """Each place's mean and spread over ``good`` distance maps ([n, rows, cols])."""
        count = len(good)

        def shrunk(values: Array) -> Array:
            pooled = (count * values + _PRIOR_SCREWS * float(values.mean())) / (
                count + _PRIOR_SCREWS
            )
            return pooled.astype(np.float32)

        spread = np.sqrt(shrunk(good.var(axis=0)))
        self.place_mean.assign(shrunk(good.mean(axis=0)))
        self.place_spread.assign(spread + _SPREAD_FLOOR * float(spread.mean()) + 1e-6)

    def raw(self, strips: tf.Tensor) -> tf.Tensor:
        """[n]: each screw's worst standardised patch, away from the grid's edge."""
        standard = (self.distances(strips) - self.place_mean) / self.place_spread
        inner = standard[:, _BORDER:-_BORDER, _BORDER:-_BORDER]
        return tf.reduce_max(inner, axis=[1, 2])

    def __call__(self, strips: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid((self.raw(strips) - self.centre) / self.spread)

    def calibrate(self, good: Array) -> None:
        """0.5 at ``good``'s 99th percentile, its median at sigmoid(-ln 9) = 0.1."""
        centre = float(np.quantile(good, 0.99))
        self.centre.assign(centre)
        self.spread.assign(max((centre - float(np.median(good))) / math.log(9.0), 1e-3))

    def raw_in_batches(self, strips: Array) -> Array:
        return _in_batches(self.raw, strips)


def _farthest_first(overview: Array, count: int) -> list[int]:
    """``count`` screws that cover the set: each next one the farthest from those chosen."""
    chosen = [0]
    gaps = np.sum((overview - overview[0]) ** 2, axis=1)
    while len(chosen) < min(count, len(overview)):
        index = int(np.argmax(gaps))
        chosen.append(index)
        gaps = np.minimum(gaps, np.sum((overview - overview[index]) ** 2, axis=1))
    return chosen


@dataclass(frozen=True)
class GoodOnly:
    """A fitted good-only model, as the trainer's service stores it (its ``Trained``)."""

    scorer: PatchScorer
    seconds: float
    validation_good: int
    frame_size: int
    shape: Geometry
    best_epoch: int = 0

    def metrics(self) -> dict[str, float]:
        return {
            "bank_screws": float(self.scorer.bank.shape[0]),
            "calibration_good": float(self.validation_good),
            "seconds": round(self.seconds, 3),
        }

    def save(self, directory: Path) -> Path:
        """The SavedModel Triton serves: frames in, calibrated scores out."""
        model = FrameModel(self.scorer, self.frame_size, self.shape, self.scorer)
        return export_frames(model, directory)


def fit(
    params: TrainingParams,
    train: tuple[npt.NDArray[np.uint8], Array],
    validation: tuple[npt.NDArray[np.uint8], Array],
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> GoodOnly:
    """The trainer's ``Fit`` for the good-only kind: its good frames only, no epochs (so
    ``on_epoch`` is never called).

    Raises:
        ValueError: no good training or validation frame.
    """
    size = int(train[0].shape[1])
    shape = geometry(size, most_pixels_along=params.strip_pixels)
    good_train, _ = strips(train[0][train[1] == 0], shape)
    good_validation, _ = strips(validation[0][validation[1] == 0], shape)
    began = time.perf_counter()
    scorer = fit_good_only(
        load_backbone(),
        good_train,
        good_validation,
        bank_size=params.bank_size,
        dims=params.feature_dims,
        neighbours=params.neighbours,
        reach_along=max(1, round(params.reach_along * shape.pixels_along / STRIDE)),
        seed=params.seed,
    )
    return GoodOnly(
        scorer=scorer,
        seconds=time.perf_counter() - began,
        validation_good=len(good_validation),
        frame_size=size,
        shape=shape,
    )


def fit_good_only(
    backbone: Backbone,
    train: Array,
    validation: Array,
    *,
    bank_size: int,
    dims: int,
    neighbours: int,
    reach_along: int,
    seed: int,
) -> PatchScorer:
    """The bank from ``train``'s good strips, calibrated on ``validation``'s good strips.

    Raises:
        ValueError: no training or no validation strips.
    """
    if not len(train) or not len(validation):
        raise ValueError("a good-only model needs good training and validation screws")
    train_maps = features(backbone, train)
    flat = train_maps.reshape(-1, train_maps.shape[-1])
    rng = np.random.default_rng(seed)
    sample = flat[rng.choice(len(flat), size=min(len(flat), 20_000), replace=False)]
    mean = sample.mean(axis=0)
    # The patch features' main directions: distances in fewer dimensions, a smaller bank.
    _, _, directions = np.linalg.svd(sample - mean, full_matrices=False)
    projection = directions[: min(dims, directions.shape[0])].T.astype(np.float32)
    projected = np.einsum("nhwc,cd->nhwd", train_maps - mean, projection).astype(np.float32)
    keep = _farthest_first(projected.mean(axis=(1, 2)), bank_size)
    scorer = PatchScorer(
        backbone,
        mean=mean.astype(np.float32),
        projection=projection,
        bank=projected[keep],
        neighbours=neighbours,
        reach_along=reach_along,
    )
    # Every training screw standardises the places, a bank screw compared without itself; the
    # validation screws stay unseen for the calibration.
    own = np.full(len(projected), -1, np.int32)
    own[keep] = np.arange(len(keep), dtype=np.int32)
    scorer.standardise(_in_batches(scorer.nearest, projected, own))
    scorer.calibrate(scorer.raw_in_batches(validation))
    return scorer
