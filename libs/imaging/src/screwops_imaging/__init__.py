"""Decoding, checking and preprocessing screw images, the same way everywhere.

Ingestion refuses what :func:`decode` refuses, validation measures what it decodes, and the trainer
and the gateway both feed the model through :func:`preprocess`, so a model never sees pixels
prepared differently at serving time than at training time.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError
from screwops_errors import InvalidInputError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MODEL_INPUT_SIZE",
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "decode",
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
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode ``data`` fully, or raise :class:`InvalidInputError` saying exactly why not.

    Every pixel is decoded here (not just the header), so a truncated file is caught at the door
    rather than in the middle of a training run.
    """
    if not data:
        raise InvalidInputError("empty image: 0 bytes")
    if len(data) > max_bytes:
        raise InvalidInputError(f"image is {len(data)} bytes, over the limit of {max_bytes}")
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
            opened.load()
    except UnidentifiedImageError as exc:
        raise InvalidInputError("not an image: the bytes match no known image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInputError(f"image refused as a decompression bomb: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInputError(f"corrupt or truncated {image_format} image: {exc}") from exc
    original_mode = opened.mode
    gray = opened if opened.mode == "L" else opened.convert("L")
    return DecodedImage(image=gray, format=image_format, original_mode=original_mode)


def preprocess(image: Image.Image, *, size: int = MODEL_INPUT_SIZE) -> npt.NDArray[np.float32]:
    """The model's input for one image: ``size`` x ``size`` x 1, float32 in [0, 1].

    Area-averaging (BOX) keeps thin scratches visible when a 1024 px image is shrunk.
    """
    gray = image if image.mode == "L" else image.convert("L")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BOX)
    pixels = np.asarray(gray, dtype=np.float32) / np.float32(255.0)
    return pixels[:, :, np.newaxis]


def preprocess_batch(
    images: list[Image.Image], *, size: int = MODEL_INPUT_SIZE
) -> npt.NDArray[np.float32]:
    """A batch for the model, shaped (n, size, size, 1)."""
    return np.stack([preprocess(image, size=size) for image in images])
