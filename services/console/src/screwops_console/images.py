"""Images embedded in pages as ``data:`` URIs, so the page needs no second request per image."""

from __future__ import annotations

import base64
import io

from screwops_errors import InvalidInputError
from screwops_imaging import decode

THUMBNAIL_PX = 224


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

    Decoded by the one decoder, within its limits (the gateway's: size and sides checked from
    the header, one frame, pixels with a gray meaning), so an upload the gateway refuses costs
    the console no more than it costs the gateway, and what it shows is the gray image the model
    judged. None when the decoder refuses the bytes: the gateway's answer says why.
    """
    try:
        small = decode(data).image.copy()
    except InvalidInputError:
        return None
    small.thumbnail((size, size))
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return f"data:image/png;base64,{base64.b64encode(out.getvalue()).decode()}"
