"""Seeded synthetic screw photos with the MVTec "screw" defect classes, in the MVTec layout.

The real Kaggle/MVTec screw set cannot be downloaded here, so the pipeline trains and is tested on
these; the same importers read the real layout, so swapping in real data changes nothing else.
"""

from screwops_synth.dataset import (
    GenerateSummary,
    contact_sheet,
    defect_counts,
    generate,
    image_rng,
)
from screwops_synth.render import DEFECT_TYPES, Sample, Style, render_sample, render_screw

__all__ = [
    "DEFECT_TYPES",
    "GenerateSummary",
    "Sample",
    "Style",
    "contact_sheet",
    "defect_counts",
    "generate",
    "image_rng",
    "render_sample",
    "render_screw",
]
