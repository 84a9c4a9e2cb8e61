"""The in-graph alignment on rendered screws: wherever and however a screw lies, its strip shows
it head left at one fixed scale, and an empty frame is reported as such."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import tensorflow as tf
from PIL import Image
from screwops_synth import image_rng, render_screw
from screwops_trainer.align import Geometry, find_pose, strip

SIZE = 256
GEOMETRY = Geometry(pixels_along=128)


def batch(*images: Image.Image) -> tf.Tensor:
    frames = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])
    return tf.constant(frames[..., np.newaxis])


def screw(index: int) -> Image.Image:
    return render_screw(image_rng(5, "align", index), size=SIZE, defect=None)


def rotated(image: Image.Image, degrees: float) -> Image.Image:
    fill = int(np.median(np.asarray(image)))
    return image.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=fill)


def correlation(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_a_turned_screw_gives_the_same_strip_head_on_the_left() -> None:
    image = screw(0)
    frames = batch(image, rotated(image, 63.0), rotated(image, 200.0))

    pose = find_pose(frames)
    strips = strip(frames, pose, GEOMETRY).numpy()[..., 0]

    assert pose.found.numpy().all()
    assert strips.shape == (3, *GEOMETRY.shape)
    for turned in strips[1:]:
        assert correlation(strips[0], turned) > 0.9
    # The head (the wide end) is left: more of the strip's left half differs from the table.
    table = np.median(strips[0])
    left, right = np.split(np.abs(strips[0] - table) > 0.08, 2, axis=1)
    assert left.sum() > right.sum()


def zoomed(image: Image.Image, factor: float) -> Image.Image:
    """The same frame with everything ``factor`` times as large about the centre."""
    x, y = image.width / 2, image.height / 2
    inverse = 1 / factor
    median = float(np.median(np.asarray(image)))
    fill = round(median) if image.mode == "L" else median
    return image.transform(
        image.size,
        Image.Transform.AFFINE,
        (inverse, 0, x - inverse * x, 0, inverse, y - inverse * y),
        resample=Image.Resampling.BILINEAR,
        fillcolor=fill,
    )


def test_the_scale_is_fixed_by_the_frame_not_by_the_screw() -> None:
    image = screw(2)
    frames = batch(image, zoomed(image, 0.8))

    pose = find_pose(frames)
    small = strip(frames, pose, GEOMETRY).numpy()[1, ..., 0]
    expected = zoomed(Image.fromarray(strip(frames, pose, GEOMETRY).numpy()[0, ..., 0]), 0.8)

    length, shorter = pose.length.numpy()
    assert abs(shorter / length - 0.8) < 0.03
    # A smaller screw stays smaller in its strip (a crop fitted to its length would stretch it).
    strip_of_big = strip(frames, pose, GEOMETRY).numpy()[0, ..., 0]
    assert correlation(small, np.asarray(expected)) > correlation(small, strip_of_big) + 0.05


def test_an_empty_frame_is_not_found() -> None:
    table = Image.new("L", (SIZE, SIZE), 180)
    noise = np.random.default_rng(0).normal(0, 3, (SIZE, SIZE))
    noisy = Image.fromarray(np.clip(np.asarray(table) + noise, 0, 255).astype(np.uint8))

    found = find_pose(batch(table, noisy, screw(1))).found.numpy()

    assert found.tolist() == [False, False, True]


def test_a_much_darker_scene_finds_the_same_screw() -> None:
    image = screw(1)
    dark = Image.fromarray((np.asarray(image, dtype=np.float32) * 0.15).round().astype(np.uint8))

    pose = find_pose(batch(image, dark))

    assert pose.found.numpy().tolist() == [True, True]
    centre_x, centre_y = pose.centre_x.numpy(), pose.centre_y.numpy()
    assert abs(centre_x[0] - centre_x[1]) < 3
    assert abs(centre_y[0] - centre_y[1]) < 3
    axis = (
        pose.axis_x.numpy() * pose.axis_x.numpy()[::-1]
        + pose.axis_y.numpy() * pose.axis_y.numpy()[::-1]
    )
    assert axis[0] > 0.99  # the same direction, head first
