"""How fast the synthetic screw renderer is on one core (the data-plane issue asks for >= 50/s).

Run it as ``OMP_NUM_THREADS=1 uv run python benchmarks/bench_render.py``: the renderer is meant to
be fast enough without parallelism, so the figure is for a single process on a single thread.
"""

from __future__ import annotations

import os
import sys
import time

from screwops_synth import DEFECT_TYPES, image_rng, render_screw

COUNT = 500
SIZE = 256
REQUIRED = 50.0
COMMAND = "OMP_NUM_THREADS=1 uv run python benchmarks/bench_render.py"


def main() -> int:
    """Render a mix of good and defective screws and fail when the rate is below the target."""
    classes = [None, *DEFECT_TYPES]
    render_screw(image_rng(0, "warm-up", 0), size=SIZE, defect=None)
    began = time.perf_counter()
    for index in range(COUNT):
        rng = image_rng(0, "bench", index)
        render_screw(rng, size=SIZE, defect=classes[index % len(classes)])
    seconds = time.perf_counter() - began
    rate = COUNT / seconds
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"command: {COMMAND}")
    print(
        f"rendered {COUNT} screws of {SIZE}x{SIZE} px in {seconds:.2f}s on one process "
        f"(OMP_NUM_THREADS={threads}): {rate:.0f} images/s (required >= {REQUIRED:.0f})"
    )
    return 0 if rate >= REQUIRED else 1


if __name__ == "__main__":
    sys.exit(main())
