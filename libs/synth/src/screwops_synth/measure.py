"""How big and how faint the rendered defects are, measured against the same screw without one.

The renderer draws a defective screw from the same generator state as a good one (same shape,
place, light and sensor noise), so ``|defective - good|`` over the defect's mask is exactly what
the defect changes: the honest measure of its contrast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from screwops_synth.render import DEFECT_TYPES, DefectLook, Style, render_sample

_GAP = 4


@dataclass(frozen=True)
class DefectMeasure:
    """One rendered defect: its share of the frame and its mean grey-level change in its mask."""

    defect: str
    seed: int
    area_fraction: float
    contrast: float
    peak: float


def measure_defects(
    seeds: Iterable[int],
    *,
    size: int,
    look: DefectLook = "subtle",
    style: Style | None = None,
    defects: Sequence[str] = DEFECT_TYPES,
) -> list[DefectMeasure]:
    """Render every defect type for every seed and measure it against the good screw.

    Args:
        seeds: Seeds of ``numpy.random.default_rng``; each gives one screw, drawn good and with
            each defect.
        size: Side of the square frames, in pixels.
        look: The defect look to measure.
        style: Photographic conditions; the default style when None.
        defects: The defect types to render.

    Returns:
        One measure per seed and defect type: ``area_fraction`` is mask pixels over frame pixels,
        ``contrast`` the mean ``|defective - good|`` over the mask, ``peak`` its maximum.
    """
    measures: list[DefectMeasure] = []
    for seed in seeds:
        good = np.asarray(
            render_sample(np.random.default_rng(seed), size=size, defect=None, style=style).image,
            dtype=np.float64,
        )
        for defect in defects:
            sample = render_sample(
                np.random.default_rng(seed), size=size, defect=defect, style=style, look=look
            )
            inside = np.asarray(sample.mask) > 0
            change = np.abs(np.asarray(sample.image, dtype=np.float64) - good)[inside]
            measures.append(
                DefectMeasure(
                    defect=defect,
                    seed=seed,
                    area_fraction=float(inside.mean()),
                    contrast=float(change.mean()) if change.size else 0.0,
                    peak=float(change.max()) if change.size else 0.0,
                )
            )
    return measures


def zoom_sheet(
    sheet: Path,
    seeds: Sequence[int],
    *,
    size: int,
    look: DefectLook = "subtle",
    style: Style | None = None,
    crop: int | None = None,
    zoom: int = 2,
) -> Path:
    """Write a PNG that shows each defect up close: defective, the same screw good, and the mask.

    A row per defect type, a triple of panels per seed, each a ``crop``-pixel square (an eighth of
    the frame by default) around the defect's mask, enlarged ``zoom`` times without smoothing, so
    that a reader sees the pixels a model gets.

    Returns:
        ``sheet``.
    """
    crop = crop or size // 8
    panel = crop * zoom
    font = ImageFont.load_default(size=16)
    label = max(
        int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(d, font=font)) for d in DEFECT_TYPES
    )
    label += 2 * _GAP
    triple = 3 * panel + 4 * _GAP
    width = label + len(seeds) * triple
    canvas = Image.new("L", (width, len(DEFECT_TYPES) * (panel + _GAP) + _GAP), 255)
    draw = ImageDraw.Draw(canvas)
    for c, seed in enumerate(seeds):
        good = render_sample(np.random.default_rng(seed), size=size, defect=None, style=style)
        for r, defect in enumerate(DEFECT_TYPES):
            bad = render_sample(
                np.random.default_rng(seed), size=size, defect=defect, style=style, look=look
            )
            left, top, right, bottom = bad.mask.getbbox() or (0, 0, size, size)
            x = min(max((left + right - crop) // 2, 0), size - crop)
            y = min(max((top + bottom - crop) // 2, 0), size - crop)
            box = (x, y, x + crop, y + crop)
            row = _GAP + r * (panel + _GAP)
            if c == 0:
                draw.text((_GAP, row + panel // 2), defect, fill=0, font=font, anchor="lm")
            for k, picture in enumerate((bad.image, good.image, bad.mask)):
                tile = picture.crop(box).resize((panel, panel), Image.Resampling.NEAREST)
                canvas.paste(tile, (label + c * triple + k * (panel + _GAP), row))
    sheet.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(sheet, optimize=True)
    return sheet
