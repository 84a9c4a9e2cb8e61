"""Helpers shared by the test levels: waiting on a condition with a deadline, unique names."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
from PIL import Image

T = TypeVar("T")


def unique(prefix: str) -> str:
    """A name no other test uses, so tests never see each other's topics, buckets or data."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float, what: str, interval: float = 0.25
) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


def png(size: int = 32, *, shade: int = 128, seed: int = 0) -> bytes:
    """A small grayscale PNG whose bytes differ per (size, shade, seed): a test image."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(shade, 20, (size, size)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()
