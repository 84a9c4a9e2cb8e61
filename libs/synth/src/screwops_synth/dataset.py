"""A synthetic data set in the MVTec AD layout, and a contact sheet to look at one.

The layout is the one the real Kaggle/MVTec "screw" download has, so the importers and the rest of
the pipeline cannot tell the two apart::

    train/good/000.png …
    test/good/000.png …
    test/<defect>/000.png …
    ground_truth/<defect>/000_mask.png …
"""

from __future__ import annotations

import multiprocessing
import time
import zlib
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from screwops_synth.render import DEFECT_TYPES, DefectLook, Style, render_sample

GOOD = "good"
TRAIN_GOOD = f"train/{GOOD}"
TEST_GOOD = f"test/{GOOD}"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_SHEET_TILE = 256
_SHEET_GAP = 4


@dataclass(frozen=True)
class GenerateSummary:
    """What ``generate`` wrote: images per class folder (``train/good``, ``test/<type>``…)."""

    out: Path
    counts: dict[str, int]
    seconds: float

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class Preset:
    """A named data set: images per class folder, their size, their seed, the defects' look and
    how much the screws' shape varies (``Style.dimension_spread``)."""

    name: str
    counts: Mapping[str, int]
    size: int
    seed: int
    look: DefectLook
    dimension_spread: float = 1.0


MVTEC_SCREW = Preset(
    name="mvtec_screw",
    # The real MVTec AD screw category, folder by folder.
    counts={
        TRAIN_GOOD: 320,
        TEST_GOOD: 41,
        "test/manipulated_front": 24,
        "test/scratch_head": 24,
        "test/scratch_neck": 25,
        "test/thread_side": 23,
        "test/thread_top": 23,
    },
    size=1024,
    seed=17,
    look="subtle",
    # One product, as on a real line: its screws differ by a per cent or two.
    dimension_spread=0.1,
)
HOLDOUT = Preset(
    name="holdout",
    # Test folders only and a seed of its own: it is never ingested, so no model has seen it.
    counts={TEST_GOOD: 1000, **{f"test/{name}": 100 for name in DEFECT_TYPES}},
    size=1024,
    seed=1017,
    look="subtle",
    dimension_spread=0.1,
)
PRESETS = {preset.name: preset for preset in (MVTEC_SCREW, HOLDOUT)}


def defect_counts(defect: int) -> dict[str, int]:
    """Images per defect type, spread evenly so that no type is starved.

    The remainder goes to the first types, so the split follows from ``defect`` alone.
    """
    share, rest = divmod(defect, len(DEFECT_TYPES))
    return {name: share + (i < rest) for i, name in enumerate(DEFECT_TYPES)}


def image_rng(seed: int, folder: str, index: int) -> np.random.Generator:
    """The generator of one image, from the seed, its class folder and its number.

    Keying by folder and number, not by position in a run, keeps an image the same when the
    counts of other classes change.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(folder.encode()), index]))


def generate(
    out: Path,
    *,
    good: int,
    defect: int,
    seed: int,
    size: int,
    style: Style | None = None,
    test_fraction_good: float = 0.2,
    look: DefectLook = "obvious",
    workers: int = 1,
) -> GenerateSummary:
    """Write a seeded synthetic screw data set; the same arguments give byte-identical files.

    Args:
        out: An empty or missing directory to write into.
        good: Good screws in all; ``test_fraction_good`` of them (rounded) go to ``test/good``.
        defect: Defective screws in all, spread over the five types by ``defect_counts``.
        seed: Seed every image's generator derives from.
        size: Width and height of the square images, in pixels.
        style: Photographic conditions; the default imitates the MVTec screw photos.
        test_fraction_good: Share of the good screws held out for testing, as MVTec does.
        look: How the defects look (``obvious`` or ``subtle``).
        workers: Processes rendering at once; the files are the same for any number.

    Returns:
        The images written per class folder and how long it took.

    Raises:
        ValueError: A count is negative or the fraction is outside [0, 1].
        FileExistsError: ``out`` already holds files, which stale images would mix with.
    """
    if good < 0 or defect < 0:
        raise ValueError(f"counts must be >= 0, got good={good} defect={defect}")
    if not 0 <= test_fraction_good <= 1:
        raise ValueError(f"test_fraction_good must be in [0, 1], got {test_fraction_good}")
    test_good = round(good * test_fraction_good)
    counts = {
        TRAIN_GOOD: good - test_good,
        TEST_GOOD: test_good,
        **{f"test/{name}": n for name, n in defect_counts(defect).items()},
    }
    return render_dataset(
        out, counts, seed=seed, size=size, style=style, look=look, workers=workers
    )


def generate_preset(
    out: Path,
    preset: Preset,
    *,
    style: Style | None = None,
    seed: int | None = None,
    size: int | None = None,
    workers: int = 1,
) -> GenerateSummary:
    """Write a preset's data set, in ``style`` (e.g. ``SHIFTED_STYLE``) when given.

    ``seed`` and ``size`` replace the preset's own, for a second draw or a quick small copy. The
    preset's dimension spread applies in any style: a shifted style moves the nominal screw, not
    how much one batch varies.
    """
    return render_dataset(
        out,
        preset.counts,
        seed=preset.seed if seed is None else seed,
        size=preset.size if size is None else size,
        style=replace(style or Style(), dimension_spread=preset.dimension_spread),
        look=preset.look,
        workers=workers,
    )


def render_dataset(
    out: Path,
    counts: Mapping[str, int],
    *,
    seed: int,
    size: int,
    style: Style | None = None,
    look: DefectLook = "obvious",
    workers: int = 1,
) -> GenerateSummary:
    """Write explicit counts per class folder, with a ground-truth mask per defective image.

    Every image's generator comes from ``image_rng(seed, folder, index)``, so an image is the same
    whichever process renders it and whatever else is rendered beside it.

    Args:
        out: An empty or missing directory to write into.
        counts: Images per class folder: ``train/good``, ``test/good`` or ``test/<defect type>``.
        seed: Seed every image's generator derives from.
        size: Width and height of the square images, in pixels.
        style: Photographic conditions; the default imitates the MVTec screw photos.
        look: How the defects look (``obvious`` or ``subtle``).
        workers: Processes rendering at once (1 renders in this process).

    Returns:
        The images written per class folder and how long it took.

    Raises:
        ValueError: A folder is not a class folder, a count is negative, or ``workers`` < 1.
        FileExistsError: ``out`` already holds files, which stale images would mix with.
    """
    jobs = _jobs(out, counts, seed=seed, size=size, style=style, look=look)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new or empty directory")
    began = time.perf_counter()
    for folder in counts:
        (out / folder).mkdir(parents=True, exist_ok=True)
        defect_type = _defect_of(folder)
        if defect_type is not None:
            (out / "ground_truth" / defect_type).mkdir(parents=True, exist_ok=True)
    if workers == 1:
        for job in jobs:
            _write(job)
    else:
        # Forked: a spawned worker would first run the caller's main script again, which an
        # unguarded script (no ``if __name__ == "__main__"``) cannot survive.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for _ in pool.map(_write, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                pass
    return GenerateSummary(out, dict(counts), time.perf_counter() - began)


@dataclass(frozen=True)
class _Job:
    """One image to render and write: everything a worker process needs, and nothing shared."""

    out: Path
    folder: str
    index: int
    seed: int
    size: int
    style: Style | None
    look: DefectLook


def _defect_of(folder: str) -> str | None:
    """The defect type a class folder holds (None for good screws).

    Raises:
        ValueError: ``folder`` is not ``train/good``, ``test/good`` or ``test/<defect type>``.
    """
    if folder in (TRAIN_GOOD, TEST_GOOD):
        return None
    split, _, name = folder.partition("/")
    if split != "test" or name not in DEFECT_TYPES:
        known = ", ".join([TRAIN_GOOD, TEST_GOOD, *(f"test/{d}" for d in DEFECT_TYPES)])
        raise ValueError(f"unknown class folder {folder!r}; known: {known}")
    return name


def _jobs(
    out: Path,
    counts: Mapping[str, int],
    *,
    seed: int,
    size: int,
    style: Style | None,
    look: DefectLook,
) -> list[_Job]:
    jobs: list[_Job] = []
    for folder, count in counts.items():
        _defect_of(folder)
        if count < 0:
            raise ValueError(f"counts must be >= 0, got {folder}={count}")
        jobs += [_Job(out, folder, index, seed, size, style, look) for index in range(count)]
    return jobs


def _write(job: _Job) -> None:
    defect_type = _defect_of(job.folder)
    rng = image_rng(job.seed, job.folder, job.index)
    sample = render_sample(rng, size=job.size, defect=defect_type, style=job.style, look=job.look)
    name = f"{job.index:03d}"
    sample.image.save(job.out / job.folder / f"{name}.png", optimize=False, compress_level=1)
    if defect_type is not None:
        masks = job.out / "ground_truth" / defect_type
        sample.mask.save(masks / f"{name}_mask.png", optimize=False, compress_level=1)


def contact_sheet(out: Path, sheet: Path, *, per_class: int = 6, tile: int = _SHEET_TILE) -> Path:
    """Write one PNG with a row of sample images per class, so a person can judge the data set.

    Works on any MVTec-layout directory, real or synthetic: the good row comes from
    ``train/good`` (``test/good`` when there is no training folder), then one row per defect
    folder under ``test``. Each image is shrunk to fit a ``tile``-pixel square.

    Raises:
        FileNotFoundError: ``out`` holds no images in the MVTec layout.
    """
    rows = [(name, files) for name, files in _sheet_rows(out, per_class) if files]
    if not rows:
        raise FileNotFoundError(f"no images in the MVTec layout under {out}")
    tiles = [[_thumbnail(path, tile) for path in files] for _, files in rows]
    side = max(t.width for row in tiles for t in row)
    font = ImageFont.load_default(size=16)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    label_width = max(int(probe.textlength(name, font=font)) for name, _ in rows) + 2 * _SHEET_GAP
    width = label_width + per_class * (side + _SHEET_GAP)
    height = len(rows) * (side + _SHEET_GAP) + _SHEET_GAP
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    for r, ((name, _), row) in enumerate(zip(rows, tiles, strict=True)):
        top = _SHEET_GAP + r * (side + _SHEET_GAP)
        draw.text((_SHEET_GAP, top + side // 2), name, fill=0, font=font, anchor="lm")
        for c, thumb in enumerate(row):
            canvas.paste(thumb, (label_width + c * (side + _SHEET_GAP), top))
    sheet.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(sheet)
    return sheet


def _sheet_rows(out: Path, per_class: int) -> list[tuple[str, list[Path]]]:
    good = out / TRAIN_GOOD if (out / TRAIN_GOOD).is_dir() else out / TEST_GOOD
    test = out / "test"
    defects = (
        sorted(p for p in test.iterdir() if p.is_dir() and p.name != GOOD) if test.is_dir() else []
    )
    return [(GOOD, _images(good, per_class)), *((p.name, _images(p, per_class)) for p in defects)]


def _images(folder: Path, limit: int) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)[:limit]


def _thumbnail(path: Path, tile: int) -> Image.Image:
    with Image.open(path) as image:
        thumb = image.convert("L")
    thumb.thumbnail((tile, tile))
    return thumb
