"""The one decoder refuses bad images with a precise reason; preprocessing is model-ready."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from screwops_errors import InvalidInputError
from screwops_imaging import _median_u8, decode, preprocess
from screwops_synth import render_screw

from tests.support import png


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def test_a_png_decodes_to_grayscale_with_its_size() -> None:
    decoded = decode(png(40))
    assert (decoded.width, decoded.height, decoded.format) == (40, 40, "PNG")
    assert decoded.image.mode == "L"


def test_a_colour_jpeg_becomes_grayscale_and_remembers_its_mode() -> None:
    decoded = decode(encoded(Image.new("RGB", (8, 8), (200, 10, 10)), "JPEG"))
    assert (decoded.image.mode, decoded.original_mode, decoded.format) == ("L", "RGB", "JPEG")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty image: 0 bytes"),
        (b"hello, not an image", "not an image"),
        (png(64)[:200], "corrupt or truncated PNG image"),
        (encoded(Image.new("L", (8, 8)), "GIF"), "unsupported image format GIF"),
    ],
)
def test_bad_bytes_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        decode(data)


def test_an_oversized_payload_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidInputError, match="over the limit of 100"):
        decode(png(64), max_bytes=100)


def test_too_many_pixels_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="64x64, over the limit of 1000 pixels"):
        decode(png(64), max_pixels=1000)


def test_preprocess_gives_the_model_input_in_unit_range() -> None:
    tensor = preprocess(decode(png(256, shade=255)).image, size=128)
    assert tensor.shape == (128, 128, 1)
    assert tensor.dtype == np.float32
    assert float(tensor.min()) >= 0.0
    assert float(tensor.max()) <= 1.0
    assert float(tensor.mean()) > 0.8


def screw(seed: int) -> Image.Image:
    return render_screw(np.random.default_rng(seed), size=256, defect=None)


@pytest.mark.parametrize("turn", [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180])
def test_preprocess_puts_a_screw_in_the_same_pose_however_it_lies(
    turn: Image.Transpose,
) -> None:
    image = screw(3)
    upright, turned = preprocess(image), preprocess(image.transpose(turn))
    unaligned = np.asarray(image.transpose(turn).resize((128, 128)), np.float32) / 255
    assert float(np.abs(upright - turned).mean()) < 0.02
    assert float(np.abs(upright[:, :, 0] - unaligned).mean()) > 0.02


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_preprocess_lays_the_screw_along_the_width_head_on_the_left(seed: int) -> None:
    tensor = preprocess(screw(seed))[:, :, 0]
    dark = tensor < np.median(tensor) - 0.1
    rows, columns = dark.any(axis=1).sum(), dark.any(axis=0).sum()
    assert columns > 3 * rows
    widths = dark.sum(axis=0)
    assert int(np.argmax(widths)) < tensor.shape[1] // 2


@given(
    arrays(np.uint8, st.integers(1, 600), elements=st.integers(0, 255)),
)
def test_the_counting_median_is_numpys_median(values: npt.NDArray[np.uint8]) -> None:
    assert _median_u8(values) == np.median(values)
