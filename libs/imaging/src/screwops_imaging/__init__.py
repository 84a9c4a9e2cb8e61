"""Decoding, checking and preprocessing screw images, the same way everywhere.

Ingestion refuses what :func:`decode` refuses, validation measures what it decodes, and the
trainer, the evaluator and the gateway all fit a decoded image to the model's frame with
:func:`fit_frame`, so a model never sees pixels prepared differently at serving time than at
training time. (The model finds and aligns the screw itself, inside its graph; :func:`preprocess`
is the older client-side alignment, kept until the trainer moves to full frames.)
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter, PngImagePlugin, TiffImagePlugin, UnidentifiedImageError
from screwops_errors import InvalidInputError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MODEL_INPUT_SIZE",
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "decode",
    "fit_frame",
    "preprocess",
    "preprocess_batch",
    "sha256_hex",
]

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
# MVTec's screws are 1024x1024; anything past 4096x4096 is refused before it is decoded.
DEFAULT_MAX_PIXELS = 4096 * 4096
SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF"})
# The model's input side in pixels: large enough for a scratch on a 1024 px screw to survive.
MODEL_INPUT_SIZE = 128

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


def preprocess(image: Image.Image, *, size: int = MODEL_INPUT_SIZE) -> npt.NDArray[np.float32]:
    """The model's input for one image: ``size`` x ``size`` x 1, float32 in [0, 1], the screw
    lying along the horizontal axis, head on the left, filling the width.

    A screw lies anywhere on the table, at any angle, and covers a small part of the frame; the
    defects are a few pixels wide. Shrinking the whole frame to the model's side would leave the
    network a blurred screw in an arbitrary pose to learn from a few hundred images. Aligning the
    part first (the classic machine-vision step before inspection) gives it the screw at the
    finest resolution the input allows, always in the same pose, so the same defect falls on the
    same place. An image with no part to find (blank, uniform) is only resized.
    """
    gray = image if image.mode == "L" else image.convert("L")
    if gray.size != (_WORK_SIDE, _WORK_SIDE):
        # Area-averaging (BOX) keeps thin scratches visible when a 1024 px image is shrunk.
        gray = gray.resize((_WORK_SIDE, _WORK_SIDE), Image.Resampling.BOX)
    pixels = np.asarray(gray)
    pose = _pose(gray, pixels)
    if pose is None:
        out = gray.resize((size, size), Image.Resampling.BOX)
    else:
        out = gray.transform(
            (size, size),
            Image.Transform.AFFINE,
            pose.affine(size),
            resample=Image.Resampling.BILINEAR,
            fillcolor=int(_median_u8(pixels)),
        )
    return (np.asarray(out, dtype=np.float32) / np.float32(255.0))[:, :, np.newaxis]


# preprocess looks for the part on a frame of this side (MVTec's 1024 px frames are shrunk to it).
_WORK_SIDE = 256
# The lighting varies slowly over the frame; the screw is thin: a blur this wide is background.
_BACKGROUND_RADIUS = 24
# A pixel belongs to the part when it differs from the background by more than this (of 255) ...
_MIN_CONTRAST = 20.0
# ... and by more than this many times the frame's typical (median) difference, for noisy frames.
_NOISE_FACTOR = 6.0
# Fewer part pixels than this: nothing to align, only resize.
_MIN_PART_PIXELS = 30
# The crop's side is the part's length times this, plus a margin, so its ends stay in view.
_CROP_SCALE = 1.1
_CROP_MARGIN = 6.0


@dataclass(frozen=True)
class _Pose:
    """Where the part lies: the centre of its extent, its axis (head to tip) and its length."""

    centre_x: float
    centre_y: float
    axis_x: float
    axis_y: float
    length: float

    def affine(self, size: int) -> tuple[float, float, float, float, float, float]:
        """PIL's output-to-input map: output x runs along the axis, y across it."""
        scale = (self.length * _CROP_SCALE + _CROP_MARGIN) / size
        a, b = scale * self.axis_x, -scale * self.axis_y
        d, e = scale * self.axis_y, scale * self.axis_x
        half = size / 2
        return (a, b, self.centre_x - (a + b) * half, d, e, self.centre_y - (d + e) * half)


def _median_u8(values: npt.NDArray[np.uint8]) -> float:
    """``np.median`` of 8-bit values, exactly, from their histogram.

    Preprocessing runs on the gateway's request path, where the two medians of a frame by
    sorting cost more than the rest of the alignment; counting 256 bins is linear and gives the
    same number (the mean of the two middle values for an even count).
    """
    cumulative = np.cumsum(np.bincount(values.ravel(), minlength=256))
    count = values.size
    low = np.searchsorted(cumulative, (count - 1) // 2, side="right")
    high = np.searchsorted(cumulative, count // 2, side="right")
    return (int(low) + int(high)) / 2


def _pose(gray: Image.Image, pixels: npt.NDArray[np.uint8]) -> _Pose | None:
    """The part's pose from the second moments of the pixels that stand out from the
    background; None when too few do."""
    background = np.asarray(gray.filter(ImageFilter.BoxBlur(_BACKGROUND_RADIUS)), np.int16)
    difference = np.abs(pixels.astype(np.int16) - background).astype(np.uint8)
    part = difference > max(_MIN_CONTRAST, _NOISE_FACTOR * _median_u8(difference))
    if int(part.sum()) < _MIN_PART_PIXELS:
        return None
    ys, xs = np.nonzero(part)
    mean_x, mean_y = float(xs.mean()), float(ys.mean())
    dx, dy = xs - mean_x, ys - mean_y
    _, vectors = np.linalg.eigh(np.cov(np.stack([dx, dy])))
    axis_x, axis_y = float(vectors[0, 1]), float(vectors[1, 1])
    along = dx * axis_x + dy * axis_y
    across = np.abs(dy * axis_x - dx * axis_y)
    low, high = (float(v) for v in np.percentile(along, [0.5, 99.5]))
    middle = (low + high) / 2
    # The head is the wide end: where the part spreads further across its axis.
    if across[along < middle].mean() < across[along >= middle].mean():
        axis_x, axis_y, low, high = -axis_x, -axis_y, -high, -low
    middle = (low + high) / 2
    return _Pose(
        centre_x=mean_x + middle * axis_x,
        centre_y=mean_y + middle * axis_y,
        axis_x=axis_x,
        axis_y=axis_y,
        length=high - low,
    )


def preprocess_batch(
    images: list[Image.Image], *, size: int = MODEL_INPUT_SIZE
) -> npt.NDArray[np.float32]:
    """A batch for the model, shaped (n, size, size, 1)."""
    return np.stack([preprocess(image, size=size) for image in images])
