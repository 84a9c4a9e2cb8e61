"""``screwops data generate``: write a synthetic screw data set, and a contact sheet to check it."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from screwops_synth.dataset import (
    PRESETS,
    GenerateSummary,
    contact_sheet,
    generate,
    generate_preset,
)
from screwops_synth.measure import DefectMeasure, measure_defects, zoom_sheet
from screwops_synth.render import DEFECT_TYPES, STYLES

app = typer.Typer(help="Synthetic screw images in the MVTec AD layout.", no_args_is_help=True)
console = Console()
DEFAULT_GOOD = 300
DEFAULT_DEFECT = 300
DEFAULT_SEED = 7
DEFAULT_SIZE = 256


class PresetName(StrEnum):
    """The named data sets of ``screwops_synth.PRESETS``."""

    MVTEC_SCREW = "mvtec_screw"
    HOLDOUT = "holdout"


class StyleName(StrEnum):
    """The named photographic styles of ``screwops_synth.STYLES``."""

    DEFAULT = "default"
    SHIFTED = "shifted"


class LookName(StrEnum):
    """How defects look: the renderer's ``DEFECT_LOOKS``."""

    OBVIOUS = "obvious"
    SUBTLE = "subtle"


@app.callback()
def main() -> None:
    """Synthetic screw images in the MVTec AD layout."""


@app.command(name="generate")
def generate_command(
    out: Annotated[Path, typer.Option("--out", help="Empty or new directory to write into.")],
    preset: Annotated[
        PresetName | None,
        typer.Option(
            "--preset",
            help="A named data set at 1024 px with subtle defects: mvtec_screw (MVTec AD's "
            "screw counts) or holdout (1,000 good and 100 per defect type, never ingested).",
        ),
    ] = None,
    style: Annotated[
        StyleName,
        typer.Option("--style", help="Photographic style: default, or shifted (another line)."),
    ] = StyleName.DEFAULT,
    good: Annotated[
        int | None,
        typer.Option("--good", min=0, help=f"Good screws in all [default: {DEFAULT_GOOD}]."),
    ] = None,
    defect: Annotated[
        int | None,
        typer.Option(
            "--defect",
            min=0,
            help=f"Defective screws, spread over the 5 types [default: {DEFAULT_DEFECT}].",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help=f"Same seed, same bytes [default: the preset's, else {DEFAULT_SEED}]."
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            min=32,
            help=f"Image side in pixels [default: the preset's, else {DEFAULT_SIZE}].",
        ),
    ] = None,
    look: Annotated[
        LookName | None,
        typer.Option("--look", help="Defect look [default: obvious]; a preset sets its own."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Processes rendering at once; same bytes.")
    ] = 1,
    sheet: Annotated[
        Path | None,
        typer.Option("--contact-sheet", help="Also write a PNG of samples per class here."),
    ] = None,
) -> None:
    """Render a seeded synthetic screw data set in the MVTec layout."""
    chosen = STYLES[style.value]
    try:
        if preset is not None:
            if good is not None or defect is not None or look is not None:
                raise typer.BadParameter(
                    "--good, --defect and --look do not go with --preset, which sets them"
                )
            summary = generate_preset(
                out, PRESETS[preset.value], style=chosen, seed=seed, size=size, workers=workers
            )
        else:
            summary = generate(
                out,
                good=DEFAULT_GOOD if good is None else good,
                defect=DEFAULT_DEFECT if defect is None else defect,
                seed=DEFAULT_SEED if seed is None else seed,
                size=DEFAULT_SIZE if size is None else size,
                style=chosen,
                look=(look or LookName.OBVIOUS).value,
                workers=workers,
            )
    except FileExistsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    _report(summary, style)
    if sheet is not None:
        console.print(f"contact sheet: {contact_sheet(out, sheet)}")


def _report(summary: GenerateSummary, style: StyleName) -> None:
    table = Table(title=f"{summary.images} screws in {summary.out} ({style.value} style)")
    table.add_column("class folder")
    table.add_column("images", justify="right")
    for folder, count in summary.counts.items():
        table.add_row(folder, str(count))
    console.print(table)
    console.print(f"{summary.seconds:.1f}s, {summary.images_per_second:.1f} images/s")


@app.command(name="measure")
def measure_command(
    size: Annotated[int, typer.Option("--size", min=32, help="Frame side in pixels.")] = 1024,
    seeds: Annotated[
        int, typer.Option("--seeds", min=1, help="Screws, each drawn with every defect type.")
    ] = 40,
    style: Annotated[StyleName, typer.Option("--style", help="Photographic style.")] = (
        StyleName.DEFAULT
    ),
    look: Annotated[LookName, typer.Option("--look", help="Defect look.")] = LookName.SUBTLE,
    zoom: Annotated[
        Path | None,
        typer.Option(
            "--zoom-sheet", help="Also write a PNG of the first 3 screws' defects up close."
        ),
    ] = None,
) -> None:
    """How big and how faint the defects are: area and contrast against the same good screw."""
    chosen = STYLES[style.value]
    measures = measure_defects(range(seeds), size=size, look=look.value, style=chosen)
    table = Table(
        title=f"{look.value} defects on {seeds} screws of {size}x{size} px ({style.value} style)"
    )
    for column in ("defect", "median area px", "median area %", "median contrast", "<= 15 grey"):
        table.add_column(column, justify="left" if column == "defect" else "right", no_wrap=True)
    for name in (*DEFECT_TYPES, "all"):
        table.add_row(name, *_figures([m for m in measures if name in (m.defect, "all")], size))
    console.print(table)
    contrasts = [m.contrast for m in measures]
    console.print(
        f"contrast quartile {np.percentile(contrasts, 25):.1f} grey levels; "
        f"faintest peak {min(m.peak for m in measures):.0f}"
    )
    if zoom is not None:
        shown = range(min(3, seeds))
        written = zoom_sheet(zoom, shown, size=size, look=look.value, style=chosen)
        console.print(f"zoom sheet: {written}")


def _figures(measures: list[DefectMeasure], size: int) -> list[str]:
    areas = [m.area_fraction for m in measures]
    contrasts = [m.contrast for m in measures]
    return [
        f"{np.median(areas) * size * size:.0f}",
        f"{np.median(areas) * 100:.4f}",
        f"{np.median(contrasts):.1f}",
        f"{np.mean(np.asarray(contrasts) <= 15):.0%}",
    ]
