"""Seeded synthetic screw photos with the MVTec "screw" defect classes, in the MVTec layout.

The real Kaggle/MVTec screw set cannot be downloaded here, so the pipeline trains and is tested on
these; the same importers read the real layout, so swapping in real data changes nothing else.
"""

from screwops_synth.dataset import (
    HOLDOUT,
    MVTEC_SCREW,
    PRESETS,
    GenerateSummary,
    Preset,
    contact_sheet,
    defect_counts,
    generate,
    generate_preset,
    image_rng,
    render_dataset,
)
from screwops_synth.measure import DefectMeasure, measure_defects
from screwops_synth.render import (
    DEFECT_LOOKS,
    DEFECT_TYPES,
    SHIFTED_STYLE,
    STYLES,
    DefectLook,
    Sample,
    Style,
    render_sample,
    render_screw,
)

__all__ = [
    "DEFECT_LOOKS",
    "DEFECT_TYPES",
    "HOLDOUT",
    "MVTEC_SCREW",
    "PRESETS",
    "SHIFTED_STYLE",
    "STYLES",
    "DefectLook",
    "DefectMeasure",
    "GenerateSummary",
    "Preset",
    "Sample",
    "Style",
    "contact_sheet",
    "defect_counts",
    "generate",
    "generate_preset",
    "image_rng",
    "measure_defects",
    "render_dataset",
    "render_sample",
    "render_screw",
]
