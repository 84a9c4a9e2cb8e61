"""The screw renderer is reproducible, writes the MVTec layout, and puts each defect in its mask."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from screwops_synth import (
    DEFECT_TYPES,
    Style,
    contact_sheet,
    defect_counts,
    generate,
    image_rng,
    render_sample,
    render_screw,
)

SIZE = 64


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


@pytest.mark.parametrize("defect", [None, *DEFECT_TYPES])
def test_masks_mark_only_defects_and_stay_inside_the_frame(defect: str | None) -> None:
    sample = render_sample(np.random.default_rng(11), size=96, defect=defect)
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


def test_contact_sheet_needs_images(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        contact_sheet(tmp_path, tmp_path / "sheet.png")
