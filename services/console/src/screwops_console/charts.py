"""Learning curves as inline SVG, drawn on the server: no chart library, no script, no download.

A chart is a function of the epochs it shows, so the same run always draws the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup
from screwops_contracts.runs import EpochRecord

# Training series solid, validation series dashed in the same colour.
COLOURS = ("#1f6feb", "#d9480f", "#2b8a3e", "#862e9c")
WIDTH = 360
HEIGHT = 190
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 30, 28


def _number(value: float) -> str:
    return f"{value:.3g}"


def _range(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-9:
        pad = abs(high) * 0.1 or 0.5
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


@dataclass(frozen=True)
class _Frame:
    """The chart's canvas and the data range its plot area maps, so every piece of the chart
    places its points the same way."""

    width: int
    height: int
    x_low: float
    x_high: float
    y_low: float
    y_high: float

    @property
    def plot_w(self) -> int:
        return self.width - LEFT - RIGHT

    @property
    def plot_h(self) -> int:
        return self.height - TOP - BOTTOM

    def px(self, x: float) -> float:
        return LEFT + (x - self.x_low) / (self.x_high - self.x_low) * self.plot_w

    def py(self, y: float) -> float:
        return TOP + (1 - (y - self.y_low) / (self.y_high - self.y_low)) * self.plot_h


def _frame(series: Mapping[str, Sequence[tuple[int, float]]], width: int, height: int) -> _Frame:
    """A frame holding every point of ``series``; a single epoch gets one either side."""
    xs = [x for points in series.values() for x, _ in points]
    x_low, x_high = min(xs), max(xs)
    if x_low == x_high:
        x_low, x_high = x_low - 1, x_high + 1
    y_low, y_high = _range([y for points in series.values() for _, y in points])
    return _Frame(width, height, x_low, x_high, y_low, y_high)


def _open(frame: _Frame, title: str) -> list[str]:
    label = escape(title)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {frame.width} {frame.height}" width="{frame.width}" '
        f'height="{frame.height}" aria-label="{label}">',
        f"<title>{label}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{frame.plot_w}" height="{frame.plot_h}" fill="#fff" '
        'stroke="#c9ced6"/>',
    ]


def _grid(frame: _Frame) -> list[str]:
    """Three horizontal lines (bottom, middle, top of the range), each with its value."""
    parts = []
    for i in range(3):
        value = frame.y_low + (frame.y_high - frame.y_low) * i / 2
        y = frame.py(value)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + frame.plot_w}" y2="{y:.1f}" '
            f'stroke="#eef0f3"/><text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" '
            f'font-size="10" fill="#555">{_number(value)}</text>'
        )
    return parts


def _epoch_axis(frame: _Frame, first: int, last: int) -> list[str]:
    """The first and last epoch under the plot, and the axis' name."""
    parts = [
        f'<text x="{frame.px(epoch):.1f}" y="{frame.height - BOTTOM + 14}" '
        f'text-anchor="middle" font-size="10" fill="#555">{epoch}</text>'
        for epoch in sorted({first, last})
    ]
    parts.append(
        f'<text x="{LEFT + frame.plot_w / 2:.1f}" y="{frame.height - 4}" text-anchor="middle" '
        'font-size="10" fill="#555">epoch</text>'
    )
    return parts


def _best_epoch(frame: _Frame, best_epoch: int | None) -> list[str]:
    """A dotted vertical line at the epoch the run kept, when it is on the chart."""
    if best_epoch is None or not frame.x_low <= best_epoch <= frame.x_high:
        return []
    x = frame.px(best_epoch)
    return [
        f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + frame.plot_h}" stroke="#888" '
        'stroke-dasharray="2 3"><title>best epoch</title></line>'
    ]


def _series(
    frame: _Frame,
    name: str,
    points: Sequence[tuple[int, float]],
    *,
    colour: str,
    legend_x: int,
) -> list[str]:
    """One metric's line (a dot when it has one point) and its legend entry at ``legend_x``,
    with its last value; a validation metric is dashed."""
    dash = ' stroke-dasharray="5 3"' if name.startswith("val_") else ""
    path = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in points)
    parts = [
        f'<polyline class="series" data-metric="{escape(name)}" points="{path}" fill="none" '
        f'stroke="{colour}" stroke-width="2"{dash}/>'
    ]
    if len(points) == 1:
        x, y = points[0]
        parts.append(
            f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="3" fill="{colour}"/>'
        )
    parts.append(
        f'<line x1="{legend_x}" y1="12" x2="{legend_x + 16}" y2="12" stroke="{colour}" '
        f'stroke-width="2"{dash}/><text x="{legend_x + 20}" y="16" font-size="11" '
        f'fill="#222">{escape(name)} {_number(points[-1][1])}</text>'
    )
    return parts


def learning_curve(
    epochs: Sequence[EpochRecord],
    metrics: Sequence[str],
    *,
    title: str,
    best_epoch: int | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup | None:
    """An SVG line chart of ``metrics`` (e.g. ``loss`` and ``val_loss``) over ``epochs``.

    None when no epoch carries any of the metrics (a run that has not finished an epoch yet).
    """
    series = {
        name: [(e.epoch, e.metrics[name]) for e in epochs if name in e.metrics] for name in metrics
    }
    series = {name: points for name, points in series.items() if points}
    if not series:
        return None
    frame = _frame(series, width, height)
    epochs_drawn = [x for points in series.values() for x, _ in points]
    parts = [
        *_open(frame, title),
        *_grid(frame),
        *_epoch_axis(frame, min(epochs_drawn), max(epochs_drawn)),
        *_best_epoch(frame, best_epoch),
    ]
    legend_x = LEFT
    for index, (name, points) in enumerate(series.items()):
        colour = COLOURS[(index // 2) % len(COLOURS)] if len(series) > 1 else COLOURS[0]
        parts += _series(frame, name, points, colour=colour, legend_x=legend_x)
        legend_x += 24 + 7 * (len(name) + 6)
    parts.append("</svg>")
    return Markup("".join(parts))
