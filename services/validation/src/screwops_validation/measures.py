"""What validation keeps of an image: a few numbers, never its pixels.

Each image is fetched, decoded with the one decoder and reduced at once, so validating thousands of
1024x1024 images holds only as many decoded images as are measured at the same time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import imagehash
import numpy as np
from screwops_contracts.datasets import ImageLabel, ManifestImage
from screwops_imaging import decode


@dataclass(frozen=True)
class Measure:
    """Everything validation keeps of one decoded image: numbers, never its pixels."""

    width: int
    height: int
    mode: str
    brightness: float
    contrast: float
    sharpness: float
    phash: int
    pixel_digest: str


@dataclass(frozen=True)
class Sample:
    """One labeled image of the manifest, with its measurements or why it had none."""

    image: ManifestImage
    label: ImageLabel
    measure: Measure | None
    problem: str = ""


def measure(data: bytes) -> Measure:
    """Decode ``data`` with the one decoder and reduce it to the numbers the assertions use.

    Sharpness is the variance of the 4-neighbour Laplacian (blurred images have little high
    frequency); the pixel digest makes re-encoded copies of one picture compare equal, which the
    content address (a digest of the file's bytes) cannot.

    Raises:
        InvalidInputError: the bytes do not decode completely.
    """
    decoded = decode(data)
    gray = decoded.image
    pixels = np.asarray(gray, dtype=np.float32)
    laplacian = (
        pixels[1:-1, :-2] + pixels[1:-1, 2:] + pixels[:-2, 1:-1] + pixels[2:, 1:-1]
    ) - 4.0 * pixels[1:-1, 1:-1]
    return Measure(
        width=decoded.width,
        height=decoded.height,
        mode=decoded.original_mode,
        brightness=float(pixels.mean()),
        contrast=float(pixels.std()),
        sharpness=float(laplacian.var()) if laplacian.size else 0.0,
        phash=int(str(imagehash.phash(gray)), 16),
        pixel_digest=hashlib.sha256(
            f"{gray.width}x{gray.height}:".encode() + gray.tobytes()
        ).hexdigest(),
    )


__all__ = ["Measure", "Sample", "measure"]
