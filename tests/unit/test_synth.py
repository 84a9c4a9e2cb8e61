"""The screw renderer is reproducible, writes the MVTec layout, and puts each defect in its mask."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter
from screwops_synth import (
    DEFECT_LOOKS,
    DEFECT_TYPES,
    HOLDOUT,
    MVTEC_SCREW,
    PRESETS,
    SHIFTED_STYLE,
    DefectLook,
    DefectMeasure,
    Style,
    contact_sheet,
    defect_counts,
    generate,
    image_rng,
    measure_defects,
    render_dataset,
    render_sample,
    render_screw,
)
from screwops_synth.cli import PresetName, StyleName, app
from screwops_synth.measure import zoom_sheet
from screwops_synth.render import STYLES, _sample_screw
from typer.testing import CliRunner

SIZE = 64
REAL_SIZE = 1024  # the MVTec frames the defect statistics are stated for
MEASURED_SEEDS = range(6)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.png"))
    }


def _pixels(image: Image.Image) -> np.ndarray[tuple[int, int], np.dtype[np.float64]]:
    return np.asarray(image, dtype=np.float64)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "screws"
    generate(out, good=5, defect=7, seed=3, size=SIZE)
    return out


def test_same_seed_gives_identical_bytes(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(again, good=5, defect=7, seed=3, size=SIZE)
    assert _digests(again) == _digests(dataset)


def test_other_seed_gives_other_images(dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate(other, good=5, defect=7, seed=4, size=SIZE)
    ours, theirs = _digests(dataset), _digests(other)
    assert ours.keys() == theirs.keys()
    assert all(ours[name] != theirs[name] for name in ours)


def test_an_image_does_not_depend_on_the_other_classes(dataset: Path, tmp_path: Path) -> None:
    fewer = tmp_path / "fewer"
    generate(fewer, good=5, defect=1, seed=3, size=SIZE)
    name = f"test/{DEFECT_TYPES[0]}/000.png"
    assert (fewer / name).read_bytes() == (dataset / name).read_bytes()


def test_layout_and_counts_spread_the_remainder_to_the_first_types(dataset: Path) -> None:
    assert defect_counts(7) == {
        "manipulated_front": 2,
        "scratch_head": 2,
        "scratch_neck": 1,
        "thread_side": 1,
        "thread_top": 1,
    }
    assert sorted(p.name for p in (dataset / "train" / "good").iterdir()) == [
        "000.png",
        "001.png",
        "002.png",
        "003.png",
    ]
    assert [p.name for p in (dataset / "test" / "good").iterdir()] == ["000.png"]
    for name, count in defect_counts(7).items():
        images = sorted(p.name for p in (dataset / "test" / name).iterdir())
        masks = sorted(p.name for p in (dataset / "ground_truth" / name).iterdir())
        assert images == [f"{i:03d}.png" for i in range(count)]
        assert masks == [f"{i:03d}_mask.png" for i in range(count)]
    assert not (dataset / "ground_truth" / "good").exists()


def test_the_summary_counts_what_was_written(tmp_path: Path) -> None:
    summary = generate(tmp_path / "s", good=3, defect=5, seed=1, size=SIZE)
    assert summary.counts["train/good"] + summary.counts["test/good"] == 3
    assert summary.images == 8
    assert summary.images_per_second > 0


def test_images_are_8_bit_grayscale_of_the_requested_size(dataset: Path) -> None:
    for path in dataset.rglob("*.png"):
        with Image.open(path) as image:
            assert image.mode == "L"
            assert image.size == (SIZE, SIZE)


@pytest.mark.parametrize("look", DEFECT_LOOKS)
@pytest.mark.parametrize("defect", [None, *DEFECT_TYPES])
def test_masks_mark_only_defects_and_stay_inside_the_frame(
    defect: str | None, look: DefectLook
) -> None:
    sample = render_sample(np.random.default_rng(11), size=96, defect=defect, look=look)
    mask = _pixels(sample.mask)
    assert set(np.unique(mask)) <= {0.0, 255.0}
    if defect is None:
        assert not mask.any()
        return
    assert mask.any()
    left, top, right, bottom = sample.mask.getbbox() or (0, 0, 0, 0)
    assert min(left, top) > 0
    assert max(right, bottom) < 96


@pytest.mark.parametrize("defect", DEFECT_TYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_defect_changes_the_same_screw_inside_its_mask(defect: str, seed: int) -> None:
    good = render_sample(np.random.default_rng(seed), size=128, defect=None)
    bad = render_sample(np.random.default_rng(seed), size=128, defect=defect)
    change = np.abs(_pixels(bad.image) - _pixels(good.image))
    # Blur and the screw's shadow carry a little of the change just past the mask's edge.
    near = _pixels(bad.mask.filter(ImageFilter.MaxFilter(5))) > 0
    assert change.max() > 60, "the defect should be plain to see"
    assert change[near].sum() / change.sum() > 0.9


def test_render_screw_is_the_image_of_render_sample() -> None:
    style = Style().shifted(0.2)
    image = render_screw(image_rng(5, "x", 0), size=SIZE, defect="thread_top", style=style)
    sample = render_sample(image_rng(5, "x", 0), size=SIZE, defect="thread_top", style=style)
    assert image.tobytes() == sample.image.tobytes()


def test_a_shifted_style_brightens_the_same_scene() -> None:
    plain = render_screw(image_rng(5, "x", 0), size=SIZE, defect=None)
    brighter = render_screw(
        image_rng(5, "x", 0), size=SIZE, defect=None, style=Style().shifted(0.3)
    )
    assert _pixels(brighter).mean() > _pixels(plain).mean() + 20


def test_an_unknown_defect_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown defect"):
        render_sample(np.random.default_rng(0), size=SIZE, defect="rust")


def test_a_too_small_picture_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        render_sample(np.random.default_rng(0), size=16, defect=None)


def test_an_invalid_style_is_refused() -> None:
    with pytest.raises(ValueError, match="background"):
        Style(background=(200.0, 100.0))


def test_generate_refuses_a_directory_with_files(dataset: Path) -> None:
    with pytest.raises(FileExistsError):
        generate(dataset, good=1, defect=0, seed=3, size=SIZE)


def test_contact_sheet_is_a_labelled_non_blank_png(dataset: Path, tmp_path: Path) -> None:
    sheet = contact_sheet(dataset, tmp_path / "sheet.png", per_class=3)
    with Image.open(sheet) as image:
        assert image.format == "PNG"
        assert image.height >= 6 * SIZE  # good and the five defect types
        assert image.width > 3 * SIZE  # the row labels sit left of the images
        assert _pixels(image).std() > 20


def test_contact_sheet_tiles_can_be_smaller(dataset: Path, tmp_path: Path) -> None:
    sheet = contact_sheet(dataset, tmp_path / "small.png", per_class=3, tile=32)
    with Image.open(sheet) as image:
        assert image.height == 6 * (32 + 4) + 4  # six rows of 32-px tiles and their gaps


def test_the_zoom_sheet_shows_each_defect_up_close(tmp_path: Path) -> None:
    panel, gap = 64, 4
    sheet = zoom_sheet(tmp_path / "zoom.png", [0], size=128, crop=32, zoom=2)
    with Image.open(sheet) as image:
        pixels = _pixels(image)
    assert pixels.shape[0] == len(DEFECT_TYPES) * (panel + gap) + gap
    left = pixels.shape[1] - (3 * panel + 4 * gap)  # the labels' column
    for row in range(len(DEFECT_TYPES)):
        top = gap + row * (panel + gap)
        bad, good, mask = (
            pixels[top : top + panel, x : x + panel]
            for x in (left, left + panel + gap, left + 2 * (panel + gap))
        )
        assert np.abs(bad - good).max() > 0, "the defect shows beside the same good screw"
        assert (mask == 255).any(), "and its mask beside them"


def test_the_measure_command_prints_every_type() -> None:
    result = CliRunner().invoke(
        app, ["measure", "--size", "128", "--seeds", "1"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    for name in (*DEFECT_TYPES, "all", "contrast quartile"):
        assert name in result.output


def test_contact_sheet_needs_images(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        contact_sheet(tmp_path, tmp_path / "sheet.png")


@pytest.fixture(scope="module")
def subtle_defects() -> list[DefectMeasure]:
    """Every defect type, subtle, on six screws of 1024 px: 30 defects measured against the good."""
    return measure_defects(MEASURED_SEEDS, size=REAL_SIZE, look="subtle")


def test_subtle_defects_are_as_small_as_real_ones(subtle_defects: list[DefectMeasure]) -> None:
    assert {m.defect for m in subtle_defects} == set(DEFECT_TYPES)
    areas = [m.area_fraction for m in subtle_defects]
    assert min(areas) > 0, "every defect must be in its mask"
    assert np.median(areas) < 0.0005  # about 500 px of 1024 x 1024


def test_a_quarter_of_subtle_defects_are_faint(subtle_defects: list[DefectMeasure]) -> None:
    faint = [m for m in subtle_defects if m.contrast <= 15]
    assert len(faint) >= len(subtle_defects) / 4


def test_subtle_defects_stay_visible(subtle_defects: list[DefectMeasure]) -> None:
    # The sensor noise is 1.5-4 grey levels: a defect must stand out from it somewhere.
    assert min(m.peak for m in subtle_defects) >= 5


def test_the_obvious_look_is_bigger_and_stronger_than_the_subtle_one(
    subtle_defects: list[DefectMeasure],
) -> None:
    obvious = measure_defects(MEASURED_SEEDS[:2], size=REAL_SIZE // 4, look="obvious")
    subtle = [m for m in subtle_defects if m.seed in MEASURED_SEEDS[:2]]
    assert np.median([m.area_fraction for m in obvious]) > 5 * np.median(
        [m.area_fraction for m in subtle]
    )
    assert np.median([m.contrast for m in obvious]) > np.median([m.contrast for m in subtle])


@pytest.mark.parametrize("defect", DEFECT_TYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_subtle_defect_changes_the_same_screw_inside_its_mask(defect: str, seed: int) -> None:
    good = render_sample(np.random.default_rng(seed), size=512, defect=None)
    bad = render_sample(np.random.default_rng(seed), size=512, defect=defect, look="subtle")
    change = np.abs(_pixels(bad.image) - _pixels(good.image))
    near = _pixels(bad.mask.filter(ImageFilter.MaxFilter(5))) > 0
    # A changed outline moves the screw's soft shadow too, by a grey level or two and far past
    # the mask; what the mask must hold is every change that stands out of the sensor noise.
    visible = change > 3
    assert visible.any()
    assert visible[near].sum() / visible.sum() >= 0.95


def test_the_default_look_is_the_obvious_one() -> None:
    for defect in DEFECT_TYPES:
        default = render_sample(image_rng(2, "x", 0), size=SIZE, defect=defect)
        obvious = render_sample(image_rng(2, "x", 0), size=SIZE, defect=defect, look="obvious")
        assert default.image.tobytes() == obvious.image.tobytes()


def test_an_unknown_look_is_refused() -> None:
    with pytest.raises(ValueError, match="look"):
        render_sample(np.random.default_rng(0), size=SIZE, defect=None, look="loud")  # type: ignore[arg-type]


def _plain(**dimensions: float) -> Style:
    """Even light on a white table, no blur or noise: only the screw and its shadow are darker."""
    return Style(
        background=(250.0, 250.0),
        gradient=0.0,
        vignette=0.0,
        noise_sigma=(0.0, 0.0),
        blur_radius=(0.0, 0.0),
        **dimensions,
    )


def _screw_pixels(style: Style) -> int:
    image = render_screw(np.random.default_rng(4), size=256, defect=None, style=style)
    return int((_pixels(image) < 249).sum())


def test_style_dimensions_change_the_screw_within_real_tolerances() -> None:
    nominal = _screw_pixels(_plain())
    assert (
        _screw_pixels(_plain(length_scale=0.95)) < nominal < _screw_pixels(_plain(head_scale=1.05))
    )
    for name in ("length_scale", "head_scale", "pitch_scale"):
        assert 0.02 <= abs(getattr(SHIFTED_STYLE, name) - 1) <= 0.1
        beyond: dict[str, Any] = {name: 1.2}
        with pytest.raises(ValueError, match=name):
            Style(**beyond)


def test_one_batch_is_one_product_when_its_spread_is_small() -> None:
    def spread_of(style: Style, field: str) -> float:
        values = [
            getattr(_sample_screw(image_rng(3, "p", i), 1024, style), field) for i in range(40)
        ]
        return float(np.ptp(values) / np.mean(values))

    # The whole range draws every screw as another product; a line's batch varies by a few %.
    for field in ("length", "head_radius", "pitch"):
        assert spread_of(Style(), field) > 0.15
        assert spread_of(Style(dimension_spread=0.1), field) < 0.05
    assert MVTEC_SCREW.dimension_spread == HOLDOUT.dimension_spread <= 0.1
    with pytest.raises(ValueError, match="dimension_spread"):
        Style(dimension_spread=1.5)


def test_the_shifted_style_has_other_light_and_screws() -> None:
    default = [
        _pixels(render_screw(image_rng(9, "s", i), size=SIZE, defect=None)) for i in range(4)
    ]
    shifted = [
        _pixels(render_screw(image_rng(9, "s", i), size=SIZE, defect=None, style=SHIFTED_STYLE))
        for i in range(4)
    ]
    # The table fills most of the frame, so its median is the table's grey.
    assert np.median(shifted) < np.median(default) - 20
    assert _screw_pixels(_plain(length_scale=SHIFTED_STYLE.length_scale)) != _screw_pixels(_plain())
    assert STYLES[StyleName.SHIFTED.value] is SHIFTED_STYLE


def test_the_presets_have_the_mvtec_screw_counts_and_a_separate_hold_out() -> None:
    assert {p.value for p in PresetName} == set(PRESETS)
    assert MVTEC_SCREW.size == HOLDOUT.size == REAL_SIZE
    assert MVTEC_SCREW.counts["train/good"] == 320
    assert MVTEC_SCREW.counts["test/good"] == 41
    assert sum(MVTEC_SCREW.counts[f"test/{d}"] for d in DEFECT_TYPES) == 119
    assert "train/good" not in HOLDOUT.counts, "the hold-out set is never trained on"
    assert HOLDOUT.counts["test/good"] >= 1000
    assert all(HOLDOUT.counts[f"test/{d}"] >= 100 for d in DEFECT_TYPES)
    assert HOLDOUT.seed != MVTEC_SCREW.seed
    assert MVTEC_SCREW.look == HOLDOUT.look == "subtle"


def test_the_cli_renders_a_preset_in_its_layout_with_masks(tmp_path: Path) -> None:
    out = tmp_path / "mvtec"
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "--out",
            str(out),
            "--preset",
            "mvtec_screw",
            "--size",
            "32",
            "--workers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    for folder, count in MVTEC_SCREW.counts.items():
        assert len(list((out / folder).iterdir())) == count
        defect = folder.removeprefix("test/")
        if defect in DEFECT_TYPES:
            assert len(list((out / "ground_truth" / defect).glob("*_mask.png"))) == count
    with Image.open(out / "test" / "good" / "040.png") as image:
        assert image.size == (32, 32)


def test_the_cli_refuses_counts_beside_a_preset(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["generate", "--out", str(tmp_path / "x"), "--preset", "holdout", "--good", "3"]
    )
    assert result.exit_code == 2
    assert not (tmp_path / "x").exists()


def test_the_worker_count_does_not_change_a_byte(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "workers"
    generate(again, good=5, defect=7, seed=3, size=SIZE, workers=2)
    assert _digests(again) == _digests(dataset)


@pytest.mark.parametrize(
    ("counts", "workers", "match"),
    [
        ({"train/scratch_head": 1}, 1, "class folder"),
        ({"test/rust": 1}, 1, "class folder"),
        ({"test/good": -1}, 1, ">= 0"),
        ({"test/good": 1}, 0, "workers"),
    ],
)
def test_render_dataset_refuses_bad_requests(
    counts: dict[str, int], workers: int, match: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=match):
        render_dataset(tmp_path / "bad", counts, seed=1, size=SIZE, workers=workers)
    assert not (tmp_path / "bad").exists()
