"""Decoding, checking and fitting screw images to the model's frame, the same way everywhere.

Ingestion refuses what :func:`decode` refuses, validation measures what it decodes, and the
trainer, the evaluator and the gateway all fit a decoded image to the model's frame with
:func:`fit_frame`, so a model never sees pixels prepared differently at serving time than at
training time. The model finds and aligns the screw itself, inside its graph.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, PngImagePlugin, TiffImagePlugin, UnidentifiedImageError
from screwops_errors import InvalidInputError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "decode",
    "fit_frame",
    "sha256_hex",
]

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
# MVTec's screws are 1024x1024; anything past 4096x4096 is refused before it is decoded.
DEFAULT_MAX_PIXELS = 4096 * 4096
SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF"})

# Pillow imports its plugins on the first file that is not PNG, JPEG, BMP, GIF or PPM: 0.1 s of
# imports under the import lock, which stalled the gateway's event loop on its first TIFF.
# Loading them with this module moves that cost to start-up.
Image.init()


@dataclass(frozen=True)
class DecodedImage:
    """An image that decoded completely, as 8-bit grayscale, with what it was before."""

    image: Image.Image
    format: str
    original_mode: str

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def sha256_hex(data: bytes) -> str:
    """The content address of an image's bytes (what MinIO keys and dedup use)."""
    return hashlib.sha256(data).hexdigest()


def decode(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    max_side: int | None = None,
) -> DecodedImage:
    """Decode ``data`` fully, or raise :class:`InvalidInputError` saying exactly why not.

    Every pixel is decoded here (not just the header), so a truncated file is caught at the door
    rather than in the middle of a training run.

    What comes out is always 8-bit gray, made from what the file means rather than its raw
    numbers: 16-bit gray spans its full range (0..65535 becomes 0..255, value/257 rounded; a
    12-bit TIFF 0..4095 likewise), since clipping at 255 would turn a normal 16-bit photo white.
    16-bit colour comes through Pillow's own reduction to 8 bits (the high byte, within one grey
    level of that scaling). Alpha is ignored. Float and signed or 32-bit integer pixels are
    refused: they have no fixed range to scale from. A file with several frames (a multi-page
    TIFF, an animated PNG) is refused rather than read as its first frame, since a camera frame is
    one image and taking the first would hide a wrong upload.

    Every size limit (``max_pixels``, ``min_side``, ``max_side``) is checked on the header's
    dimensions before a pixel is decoded: a small file can declare a huge image (a PNG of one
    colour compresses about 1000:1), and decoding it only to refuse it would cost the full
    decode.
    """
    if not data:
        raise InvalidInputError("empty image: 0 bytes")
    if len(data) > max_bytes:
        raise InvalidInputError(f"image is {len(data)} bytes, over the limit of {max_bytes}")
    image_format = ""  # known once the header is read: a header that breaks names no format
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            image_format = opened.format or "unknown"
            if image_format not in SUPPORTED_FORMATS:
                raise InvalidInputError(
                    f"unsupported image format {image_format}; "
                    f"supported: {', '.join(sorted(SUPPORTED_FORMATS))}"
                )
            if opened.width * opened.height > max_pixels:
                raise InvalidInputError(
                    f"image is {opened.width}x{opened.height}, over the limit of {max_pixels} "
                    "pixels"
                )
            _check_sides(opened.width, opened.height, min_side, max_side)
            frames = _frames(opened)
            if frames is not None:
                raise InvalidInputError(
                    f"image has {frames} frames; one is expected (a camera frame is one image)"
                )
            opened.load()
    except UnidentifiedImageError as exc:
        raise InvalidInputError("not an image: the bytes match no known image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInputError(f"image refused as a decompression bomb: {exc}") from exc
    # Pillow also raises TypeError on some damaged TIFF tags (a rational where an int belongs).
    except (OSError, SyntaxError, ValueError, TypeError) as exc:
        what = f"{image_format} image" if image_format else "image header"
        raise InvalidInputError(f"corrupt or truncated {what}: {exc}") from exc
    return DecodedImage(image=_gray(opened), format=image_format, original_mode=opened.mode)


def _check_sides(width: int, height: int, min_side: int, max_side: int | None) -> None:
    if min(width, height) < min_side:
        raise InvalidInputError(
            f"image is {width}x{height}, smaller than the minimum of {min_side}x{min_side}"
        )
    if max_side is not None and max(width, height) > max_side:
        raise InvalidInputError(
            f"image is {width}x{height}, larger than the maximum of {max_side}x{max_side}"
        )


# Modes Pillow turns into gray itself, faithfully (alpha dropped, palette looked up, CMYK and
# YCbCr converted; Pillow already reduced 16-bit colour to these 8-bit modes on reading).
_GRAY_BY_PILLOW = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
_SIXTEEN_BIT_GRAY = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# A multi-page TIFF's pages are counted by walking its chain of directories, which a small file
# can make tens of thousands long (seconds of work): the count stops after this many.
_MAX_FRAMES_COUNTED = 100


def _frames(opened: Image.Image) -> str | None:
    """How many frames ``opened`` holds, as a refusal says it, or None when it holds one.

    An animated PNG states its count in its header; a TIFF's pages are counted by walking them.
    Pillow checks only a TIFF's first directory on opening; a damaged later one fails the walk
    with errors of its own, refused here as the corrupt file it is.
    """
    if not getattr(opened, "is_animated", False):
        return None
    if isinstance(opened, PngImagePlugin.PngImageFile):
        return str(opened.n_frames)
    for frame in range(1, _MAX_FRAMES_COUNTED + 1):
        try:
            opened.seek(frame)
        except EOFError:
            return str(frame)
        except (KeyError, TypeError) as exc:
            raise InvalidInputError(
                f"corrupt or truncated TIFF image: page {frame + 1}: {exc}"
            ) from exc
    return f"more than {_MAX_FRAMES_COUNTED}"


def _gray(opened: Image.Image) -> Image.Image:
    """``opened`` as 8-bit gray, or :class:`InvalidInputError` when its pixels cannot be."""
    mode = opened.mode
    if mode == "L":
        return opened
    if mode in _GRAY_BY_PILLOW:
        return opened.convert("L")
    if mode in _SIXTEEN_BIT_GRAY:
        return _scaled_to_8_bits(opened)
    if mode == "F":
        raise InvalidInputError("float images are not supported: send 8- or 16-bit")
    if mode == "I":
        raise InvalidInputError(
            "signed or 32-bit integer images are not supported: send 8- or 16-bit"
        )
    raise InvalidInputError(
        f"{mode} images are not supported: send 8- or 16-bit grayscale or colour"
    )


def _scaled_to_8_bits(opened: Image.Image) -> Image.Image:
    """Unsigned 16-bit gray on 0..255, white staying white: Pillow's ``convert("L")`` clips
    instead, which turns every value above 255 (nearly all of a 16-bit photo) white.

    A TIFF may say its samples have fewer bits (12, from a Mono12 camera): its white is then
    4095, not 65535. Values above white (which such a file should not hold) stay white.
    """
    bits = 16
    if isinstance(opened, TiffImagePlugin.TiffImageFile):
        declared = opened.tag_v2.get(TiffImagePlugin.BITSPERSAMPLE, (16,))
        bits = int(declared[0] if isinstance(declared, tuple) else declared)
    white = (1 << bits) - 1
    levels = np.minimum(np.arange(1 << 16), white) * 255 / white
    table = np.floor(levels + 0.5).astype(np.uint8)
    return Image.fromarray(table[np.asarray(opened)])


def fit_frame(image: Image.Image, size: int) -> npt.NDArray[np.uint8]:
    """``image`` as the model's input frame: ``size`` x ``size`` x 1, uint8 grey.

    A frame of the model's size is passed through bit for bit: a camera that matches the model
    costs a copy, and nothing a resampling would blur is lost. Any other image keeps its aspect
    (a screw stretched along one axis would be a different screw): its longer side is scaled to
    ``size`` (area-averaged when shrinking, so a thin scratch stays visible; bilinear when
    enlarging) and it is centred on a canvas of its own median grey, which reads as background
    to the model's part finder rather than as an edge.

    Raises:
        InvalidInputError: ``size`` is not positive.
    """
    if size < 1:
        raise InvalidInputError(f"a frame size is at least 1 pixel, not {size}")
    gray = image if image.mode == "L" else image.convert("L")
    if gray.size != (size, size):
        scale = size / max(gray.width, gray.height)
        fitted = (
            min(size, max(1, round(gray.width * scale))),
            min(size, max(1, round(gray.height * scale))),
        )
        if fitted != gray.size:
            resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
            gray = gray.resize(fitted, resample)
        pixels = np.asarray(gray)
        canvas = Image.new("L", (size, size), round(_median_u8(pixels)))
        canvas.paste(gray, ((size - gray.width) // 2, (size - gray.height) // 2))
        gray = canvas
    return np.asarray(gray, dtype=np.uint8)[:, :, np.newaxis]


def _median_u8(values: npt.NDArray[np.uint8]) -> float:
    """``np.median`` of 8-bit values, exactly, from their histogram.

    Fitting a frame runs on the gateway's request path; counting 256 bins is linear, where
    sorting is not, and gives the same number (the mean of the two middle values for an even
    count).
    """
    cumulative = np.cumsum(np.bincount(values.ravel(), minlength=256))
    count = values.size
    low = np.searchsorted(cumulative, (count - 1) // 2, side="right")
    high = np.searchsorted(cumulative, count // 2, side="right")
    return (int(low) + int(high)) / 2
