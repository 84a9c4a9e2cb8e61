"""Learning curves as inline SVG, drawn on the server: no chart library, no script, no download.

A chart is a function of the epochs it shows, so the same run always draws the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points]
    x_low, x_high = min(xs), max(xs)
    if x_low == x_high:
        x_low, x_high = x_low - 1, x_high + 1
    y_low, y_high = _range(ys)
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return TOP + (1 - (y - y_low) / (y_high - y_low)) * plot_h

    label = escape(title)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-label="{label}">',
        f"<title>{label}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#c9ced6"/>',
    ]
    for i in range(3):
        value = y_low + (y_high - y_low) * i / 2
        y = py(value)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#eef0f3"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
            f'fill="#555">{_number(value)}</text>'
        )
    first, last = min(xs), max(xs)
    for epoch in sorted({first, last}):
        parts.append(
            f'<text x="{px(epoch):.1f}" y="{height - BOTTOM + 14}" text-anchor="middle" '
            f'font-size="10" fill="#555">{epoch}</text>'
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" '
        'font-size="10" fill="#555">epoch</text>'
    )
    if best_epoch is not None and x_low <= best_epoch <= x_high:
        x = px(best_epoch)
        parts.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="#888" '
            'stroke-dasharray="2 3"><title>best epoch</title></line>'
        )
    legend_x = LEFT
    for index, (name, points) in enumerate(series.items()):
        colour = COLOURS[(index // 2) % len(COLOURS)] if len(series) > 1 else COLOURS[0]
        dash = ' stroke-dasharray="5 3"' if name.startswith("val_") else ""
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline class="series" data-metric="{escape(name)}" points="{path}" fill="none" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        if len(points) == 1:
            x, y = points[0]
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        parts.append(
            f'<line x1="{legend_x}" y1="12" x2="{legend_x + 16}" y2="12" stroke="{colour}" '
            f'stroke-width="2"{dash}/><text x="{legend_x + 20}" y="16" font-size="11" '
            f'fill="#222">{escape(name)} {_number(points[-1][1])}</text>'
        )
        legend_x += 24 + 7 * (len(name) + 6)
    parts.append("</svg>")
    return Markup("".join(parts))
