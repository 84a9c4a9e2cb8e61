"""Test accuracy and training time of the trainer's model on the default synthetic data set.

The issue's floor: on ``screwops data generate``'s defaults (300 good and 300 defective screws,
seed 7, 256 px), split as validation splits it (70/15/15, stratified by label and defect type,
near-duplicates kept together), the trainer's model with its default params reaches >= 0.97
accuracy on the test split within 10 minutes of training on 2 CPU cores.

Run it as ``uv run python benchmarks/bench_train.py`` (``--set name=value`` overrides a
parameter, for tuning). It renders the data set into a temporary directory, decodes every image
and fits it to the model's frame (the renders' 256 px, as the trainer picks the training images'
most common side) with the functions the services use, trains with ``screwops_trainer.model.fit``,
exports the served graph as the trainer does and scores the test split's frames through it the
evaluator's way (threshold 0.5; a frame in which no screw is found is a defect verdict).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
from screwops_contracts.datasets import SplitName
from screwops_imaging import decode, fit_frame
from screwops_synth import generate
from screwops_trainer.model import TrainingParams, configure_tensorflow, fit
from screwops_trainer.scoring import score_saved_model
from screwops_validation.config import Thresholds
from screwops_validation.measures import measure
from screwops_validation.split import SplitUnit, cluster, stratified_split

GOOD, DEFECT, SEED, SIZE = 300, 300, 7, 256
REQUIRED_ACCURACY = 0.97
TIME_LIMIT_S = 600.0
COMMAND = "uv run python benchmarks/bench_train.py"
Floats = npt.NDArray[np.float32]
Frames = npt.NDArray[np.uint8]


def load(root: Path) -> tuple[list[str], dict[str, Frames], dict[str, str | None]]:
    """Every image's sha256, its frame and its defect type (None: good)."""
    pixels: dict[str, Frames] = {}
    defects: dict[str, str | None] = {}
    for path in sorted(root.glob("*/*/*.png")):
        if path.parts[-3] == "ground_truth":
            continue
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        pixels[sha] = fit_frame(decode(data).image, SIZE)
        folder = path.parent.name
        defects[sha] = None if folder == "good" else folder
        measured = measure(data)
        measures[sha] = (measured.phash, measured.pixel_digest)
    return sorted(pixels), pixels, defects


measures: dict[str, tuple[int, str]] = {}


def split(shas: list[str], defects: dict[str, str | None]) -> dict[str, SplitName]:
    """Validation's split with its default rules."""
    rules = Thresholds()
    groups = cluster(
        [measures[s][0] for s in shas],
        [measures[s][1] for s in shas],
        rules.near_duplicate_distance,
    )
    units = [
        SplitUnit(sha, "good" if defects[sha] is None else "bad", defects[sha], group)
        for sha, group in zip(shas, groups, strict=True)
    ]
    return stratified_split(units, rules.fractions, rules.split_seed)


def main() -> int:
    """Generate, split, train and score; fail when the floor is not met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    params = TrainingParams.model_validate(overrides)
    configure_tensorflow(intra_op_threads=2, inter_op_threads=1)

    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "screws"
        generate(root, good=GOOD, defect=DEFECT, seed=SEED, size=SIZE)
        shas, pixels, defects = load(root)
    assignments = split(shas, defects)

    def arrays(name: SplitName) -> tuple[Frames, Floats, list[str | None]]:
        chosen = [s for s in shas if assignments[s] == name]
        x = np.stack([pixels[s] for s in chosen])
        y = np.array([0.0 if defects[s] is None else 1.0 for s in chosen], dtype=np.float32)
        return x, y, [defects[s] for s in chosen]

    x_train, y_train, _ = arrays(SplitName.TRAIN)
    x_val, y_val, _ = arrays(SplitName.VALIDATION)
    x_test, y_test, test_defects = arrays(SplitName.TEST)
    print(f"command: {COMMAND} {' '.join(f'--set {s}' for s in args.set)}".rstrip())
    print(f"params: {params.model_dump_json()}")
    print(f"split: train {len(y_train)}, validation {len(y_val)}, test {len(y_test)}")

    def report(epoch: int, logs: dict[str, float]) -> None:
        figures = " ".join(f"{k}={v:.4f}" for k, v in logs.items())
        print(f"  epoch {epoch:3d} {figures} ({time.perf_counter() - began:.0f}s)", flush=True)

    began = time.perf_counter()
    fitted = fit(params, (x_train, y_train), (x_val, y_val), on_epoch=report)
    with tempfile.TemporaryDirectory() as directory:
        predicted = score_saved_model(fitted.save(Path(directory) / "saved_model"), x_test) > 0.5
    correct = predicted == (y_test > 0.5)
    accuracy = float(correct.mean())
    wrong = Counter(t or "good" for t, ok in zip(test_defects, correct, strict=True) if not ok)
    print(
        f"test accuracy {accuracy:.4f} ({int(correct.sum())}/{len(correct)}; wrong: "
        f"{dict(wrong) or 'none'}) after {fitted.epochs_run} epochs "
        f"(best {fitted.best_epoch}) in {fitted.seconds:.0f}s of training "
        f"(required >= {REQUIRED_ACCURACY} within {TIME_LIMIT_S:.0f}s)"
    )
    return 0 if accuracy >= REQUIRED_ACCURACY and fitted.seconds <= TIME_LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
