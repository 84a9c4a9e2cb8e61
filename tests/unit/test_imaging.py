"""The one decoder refuses bad images with a precise reason; fit_frame gives the model its frame."""

from __future__ import annotations

import io
import struct

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from screwops_errors import InvalidInputError
from screwops_imaging import _median_u8, decode, fit_frame

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


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        (5000, 40, "5000x40, larger than the maximum of 4096x4096"),
        (20, 64, "20x64, smaller than the minimum of 32x32"),
    ],
)
def test_sides_are_checked_from_the_header_before_any_pixel_is_decoded(
    width: int, height: int, reason: str
) -> None:
    """The file is cut after its header: had its pixels been decoded, it would be corrupt."""
    header_only = encoded(Image.new("L", (width, height)), "PNG")[:64]
    with pytest.raises(InvalidInputError, match=reason):
        decode(header_only, min_side=32, max_side=4096)


def sixteen_bit(values: npt.NDArray[np.uint16], fmt: str) -> bytes:
    return encoded(Image.fromarray(values), fmt)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_gray_spans_its_full_range_instead_of_clipping_white(fmt: str) -> None:
    mid_grey = np.full((8, 8), 128 * 257, np.uint16)
    decoded = decode(sixteen_bit(mid_grey, fmt))
    assert (decoded.image.mode, decoded.original_mode) == ("L", "I;16")
    assert np.asarray(decoded.image).tolist() == np.full((8, 8), 128).tolist()


def test_sixteen_bit_values_are_divided_by_257_and_rounded() -> None:
    values = np.array([[0, 128, 129, 257 * 100 + 128, 257 * 100 + 129, 65535]], np.uint16)
    assert np.asarray(decode(sixteen_bit(values, "PNG")).image).tolist() == [
        [0, 0, 1, 100, 101, 255]
    ]


def twelve_bit_tiff(samples: list[int]) -> bytes:
    """One row of 12-bit gray samples (an even number), as a Mono12 camera writes them; Pillow
    cannot write this."""
    packed = b"".join(
        bytes([a >> 4, (a & 0xF) << 4 | b >> 8, b & 0xFF])
        for a, b in zip(samples[::2], samples[1::2], strict=True)
    )
    tags = [(256, len(samples)), (257, 1), (258, 12), (259, 1), (262, 1)]
    tags += [(273, 8 + 2 + 12 * 9 + 4), (277, 1), (278, 1), (279, len(packed))]
    directory = b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in tags)
    return b"II*\x00" + struct.pack("<IH", 8, len(tags)) + directory + bytes(4) + packed


def test_a_twelve_bit_tiff_is_scaled_from_its_own_white() -> None:
    decoded = decode(twelve_bit_tiff([0, 1024, 2048, 4095]))
    assert np.asarray(decoded.image).tolist() == [[0, 64, 128, 255]]


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (Image.new("F", (8, 8), 0.5), "float images are not supported: send 8- or 16-bit"),
        (
            Image.new("I", (8, 8), 128 * 257),
            "signed or 32-bit integer images are not supported: send 8- or 16-bit",
        ),
        (Image.new("LAB", (8, 8)), "LAB images are not supported"),
    ],
)
def test_pixels_with_no_gray_meaning_are_refused_with_the_reason(
    image: Image.Image, reason: str
) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        decode(encoded(image, "TIFF"))


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("LA", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("P", "TIFF"), ("CMYK", "TIFF"), ("RGB", "BMP")],
)
def test_every_other_mode_comes_out_as_its_gray(mode: str, fmt: str) -> None:
    decoded = decode(encoded(Image.new("L", (8, 8), 128).convert(mode), fmt))
    assert decoded.original_mode == mode
    assert np.asarray(decoded.image).tolist() == np.full((8, 8), 128).tolist()


def several(fmt: str, frames: int) -> bytes:
    first, *rest = [Image.new("L", (8, 8), shade) for shade in range(frames)]
    out = io.BytesIO()
    first.save(out, format=fmt, save_all=True, append_images=rest)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "frames", "said"), [("PNG", 3, "3"), ("TIFF", 2, "2"), ("TIFF", 101, "more than 100")]
)
def test_an_image_of_several_frames_is_refused_saying_how_many(
    fmt: str, frames: int, said: str
) -> None:
    with pytest.raises(InvalidInputError) as error:
        decode(several(fmt, frames))
    assert error.value.message == (
        f"image has {said} frames; one is expected (a camera frame is one image)"
    )


def test_a_damaged_later_page_is_refused_as_corrupt() -> None:
    data = bytearray(several("TIFF", 2))
    (first,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, first)
    (second,) = struct.unpack_from("<I", data, first + 2 + 12 * entries)
    (entries,) = struct.unpack_from("<H", data, second)
    for entry in range(second + 2, second + 2 + 12 * entries, 12):
        if struct.unpack_from("<H", data, entry) == (256,):
            struct.pack_into("<H", data, entry, 65000)  # the page loses its width
    with pytest.raises(InvalidInputError, match="corrupt or truncated TIFF image: page 2"):
        decode(bytes(data))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_file_written_as_an_animation_of_one_frame_is_one_image(fmt: str) -> None:
    assert decode(several(fmt, 1)).width == 8


@given(
    arrays(np.uint8, st.integers(1, 600), elements=st.integers(0, 255)),
)
def test_the_counting_median_is_numpys_median(values: npt.NDArray[np.uint8]) -> None:
    assert _median_u8(values) == np.median(values)


def test_a_header_that_breaks_before_its_format_is_known_is_refused_as_corrupt() -> None:
    truncated_ihdr = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR\x00\x00"
    with pytest.raises(InvalidInputError, match="corrupt or truncated image header"):
        decode(truncated_ihdr)


def test_fit_frame_passes_a_frame_of_the_model_size_through_bit_for_bit() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)
    frame = fit_frame(Image.fromarray(pixels), 64)
    assert frame.dtype == np.uint8
    assert frame.shape == (64, 64, 1)
    assert np.array_equal(frame[:, :, 0], pixels)


def test_fit_frame_keeps_the_aspect_and_pads_with_the_images_median_grey() -> None:
    # 200 x 100 of grey 90 with a bright square in the middle: shrunk to 100 x 50, centred.
    pixels = np.full((100, 200), 90, dtype=np.uint8)
    pixels[40:60, 90:110] = 250
    frame = fit_frame(Image.fromarray(pixels), 100)[:, :, 0]
    assert frame.shape == (100, 100)
    assert (frame[:25] == 90).all()
    assert (frame[75:] == 90).all()
    image_rows = frame[25:75]
    assert (image_rows[:, :40] == 90).all()
    # The square stays square (10 x 10 after halving): the aspect is kept.
    bright = np.argwhere(image_rows == 250)
    assert np.ptp(bright[:, 0]) == np.ptp(bright[:, 1]) == 9


def test_fit_frame_area_averages_when_shrinking_and_enlarges_a_small_image() -> None:
    stripes = np.zeros((64, 64), dtype=np.uint8)
    stripes[:, ::2] = 200  # one-pixel lines: averaged to 100, not dropped
    assert (fit_frame(Image.fromarray(stripes), 32) == 100).all()
    small = fit_frame(Image.fromarray(np.full((8, 16), 30, np.uint8)), 64)
    assert small.shape == (64, 64, 1)
    assert (small == 30).all()


def test_fit_frame_turns_colour_into_grey_and_refuses_an_empty_frame() -> None:
    rgb = Image.new("RGB", (10, 10), (255, 255, 255))
    assert (fit_frame(rgb, 10) == 255).all()
    with pytest.raises(InvalidInputError, match="frame size"):
        fit_frame(rgb, 0)
