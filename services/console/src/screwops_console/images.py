"""Images embedded in pages as ``data:`` URIs, so the page needs no second request per image."""

from __future__ import annotations

import base64
import io
import warnings

from PIL import Image

THUMBNAIL_PX = 224
MAX_PIXELS = 64_000_000
"""Refuse to decode anything larger (a decompression bomb), rather than Pillow's warning."""


def image_type(data: bytes) -> str | None:
    """The MIME type of PNG or JPEG bytes, from their signature; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


def data_uri(data: bytes) -> str | None:
    """``data`` as a ``data:`` URI, if it is a PNG or JPEG (the formats the services store)."""
    kind = image_type(data)
    if kind is None:
        return None
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def thumbnail(data: bytes, size: int = THUMBNAIL_PX) -> str | None:
    """A PNG thumbnail of ``data`` at most ``size`` pixels a side, as a ``data:`` URI.

    None when the bytes are not an image Pillow can decode: the gateway's answer says why.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    return None
                image.draft(image.mode, (size, size))  # JPEG: decode at a reduced scale
                small = image.convert("RGB") if image.mode not in ("L", "RGB") else image.copy()
        small.thumbnail((size, size))
        out = io.BytesIO()
        small.save(out, format="PNG", optimize=True)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Warning):
        return None
    return f"data:image/png;base64,{base64.b64encode(out.getvalue()).decode()}"
