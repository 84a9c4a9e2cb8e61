"""How big and how faint the rendered defects are, measured against the same screw without one.

The renderer draws a defective screw from the same generator state as a good one (same shape,
place, light and sensor noise), so ``|defective - good|`` over the defect's mask is exactly what
the defect changes: the honest measure of its contrast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from screwops_synth.render import DEFECT_TYPES, DefectLook, Style, render_sample


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
