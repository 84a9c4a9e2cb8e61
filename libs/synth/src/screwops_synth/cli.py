"""``screwops data generate``: write a synthetic screw data set, and a contact sheet to check it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from screwops_synth.dataset import contact_sheet, generate

app = typer.Typer(help="Synthetic screw images in the MVTec AD layout.", no_args_is_help=True)
console = Console()


# A callback keeps ``generate`` a named subcommand although it is the only one.
@app.callback()
def main() -> None:
    """Synthetic screw images in the MVTec AD layout."""


@app.command(name="generate")
def generate_command(
    out: Annotated[Path, typer.Option("--out", help="Empty or new directory to write into.")],
    good: Annotated[int, typer.Option("--good", min=0, help="Good screws in all.")] = 300,
    defect: Annotated[
        int, typer.Option("--defect", min=0, help="Defective screws, spread over the 5 types.")
    ] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 7,
    size: Annotated[int, typer.Option("--size", min=32, help="Image side in pixels.")] = 256,
    sheet: Annotated[
        Path | None,
        typer.Option("--contact-sheet", help="Also write a PNG of samples per class here."),
    ] = None,
) -> None:
    """Render a seeded synthetic screw data set in the MVTec layout."""
    try:
        summary = generate(out, good=good, defect=defect, seed=seed, size=size)
    except FileExistsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    table = Table(title=f"{summary.images} screws of {size}x{size} px in {out}")
    table.add_column("class folder")
    table.add_column("images", justify="right")
    for folder, count in summary.counts.items():
        table.add_row(folder, str(count))
    console.print(table)
    console.print(f"{summary.seconds:.1f}s, {summary.images_per_second:.0f} images/s (seed {seed})")
    if sheet is not None:
        console.print(f"contact sheet: {contact_sheet(out, sheet)}")
