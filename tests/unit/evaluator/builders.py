"""Test versions and model behaviours for the evaluator, shared by the unit and integration tests.

The pictures are a disc on a flat background, and every model here looks only at the brightest
pixel: it calls a screw defective when that pixel is darker than its ``cutoff``. Good screws have
a bright disc, plain defective ones a dark disc, and a few "borderline" defective ones a disc of
middling brightness, so a model's accuracy is set exactly by where its cutoff falls:

* :data:`SHARP` (cutoff 0.8) gets every test image right: accuracy 1.0;
* :data:`LAX` (cutoff 0.55) passes the 2 borderline defects: accuracy 48/50 = 0.96 and defect
  recall 18/20 = 0.9, which clears the absolute gate but is 0.04 below :data:`SHARP`.

The fake Triton computes the same function the frames models of the integration test compute
(``tests.frames_model`` with a ``cutoff`` and ``STEEPNESS``: the sigmoid of ``STEEPNESS *
(cutoff - brightest)``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from screwops_contracts.datasets import Bucket, Label, Split, SplitName, version_prefix
from screwops_storage import sha256_hex

from tests.unit.validation.builders import File, Pixels, Writer, encode, stage_version

SHARP = 0.8
LAX = 0.55
STEEPNESS = 50.0

GOOD_LEVEL = 230
BAD_LEVEL = 40
BORDERLINE_LEVEL = 170
PLAIN_DEFECTS = ("scratch_head", "thread_side", "manipulated_front")
BORDERLINE_DEFECT = "scratch_neck"


def disc_pixels(seed: int, level: int, *, size: int = 64) -> Pixels:
    """A disc of brightness ``level`` at a random place on a flat, slightly noisy background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(size * 0.3, size * 0.7, 2)
    radius = rng.uniform(size * 0.15, size * 0.25)
    disc = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    pixels = np.where(disc, level, 100) + rng.normal(0, 3, (size, size))
    clipped: Pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    return clipped


def disc_file(seed: int, level: int, label: Label, defect_type: str | None, note: str) -> File:
    name = f"{label.value}/{seed:04d}.png"
    return File(name, encode(disc_pixels(seed, level), note=note), label, defect_type)


def evaluation_set(note: str = "") -> tuple[list[File], list[File]]:
    """(test images, other images): 30 good, 18 plain and 2 borderline defects in the test
    split, and a few training images the evaluator must leave out. ``note`` makes the bytes (and
    so the content keys) a run's own without changing the pictures."""
    test = [
        *[disc_file(i, GOOD_LEVEL, Label.GOOD, None, note) for i in range(30)],
        *[disc_file(100 + i, BAD_LEVEL, Label.BAD, PLAIN_DEFECTS[i % 3], note) for i in range(18)],
        *[
            disc_file(200 + i, BORDERLINE_LEVEL, Label.BAD, BORDERLINE_DEFECT, note)
            for i in range(2)
        ],
    ]
    # Trained on, never tested: a borderline "good" screw would cost SHARP its perfect score.
    other = [disc_file(300 + i, BORDERLINE_LEVEL, Label.GOOD, None, note) for i in range(4)]
    return test, other


async def stage_split_version(
    objects: Writer, dataset_id: str, test: list[File], other: list[File], *, version: int = 1
) -> None:
    """Store the images, manifest and label set (as labeling would) and the split (as
    validation would): ``test`` in the test split, ``other`` in train and validation."""
    await stage_version(objects, dataset_id, [*test, *other], version=version)
    assignments = {sha256_hex(f.data): SplitName.TEST for f in test}
    for i, file in enumerate(other):
        assignments[sha256_hex(file.data)] = SplitName.TRAIN if i % 2 else SplitName.VALIDATION
    split = Split(dataset_id=dataset_id, version=version, seed=0, assignments=assignments)
    await objects.put_named(
        Bucket.DATASETS,
        f"{version_prefix(dataset_id, version)}/split.json",
        split.model_dump_json().encode(),
    )


def brightest(frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Each frame's brightest pixel, on [0, 1]."""
    values: npt.NDArray[np.float32] = frames.reshape(len(frames), -1).max(axis=1).astype(
        np.float32
    ) / np.float32(255.0)
    return values


def defect_probability(frames: npt.NDArray[np.uint8], cutoff: float) -> npt.NDArray[np.float32]:
    """What a model with ``cutoff`` answers for a batch of frames."""
    lightest = brightest(frames)
    probability: npt.NDArray[np.float32] = (
        1.0 / (1.0 + np.exp(-STEEPNESS * (cutoff - lightest)))
    ).astype(np.float32)
    return probability
