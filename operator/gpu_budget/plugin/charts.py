"""Inline SVG charts, drawn in Python: a page that needs no script, font or file from anywhere.

Two shapes cover the report: stacked columns over time (spend by team) and
horizontal bars (top budgets, idle spend). Every chart has a fixed viewBox and
explicit width and height, so a browser lays it out at its size before
anything else loads, and a ``<title>`` per shape, so hovering shows the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
WIDTH = 760


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def stacked_columns(
    title: str, labels: Sequence[str], stacks: Mapping[str, Sequence[float]], height: int = 300
) -> str:
    """One column per label, each the stack of every series' value there (USD)."""
    left, bottom, top = 70, 40, 30
    plot_w, plot_h = WIDTH - left - 160, height - bottom - top
    totals = [sum(values[i] for values in stacks.values()) for i in range(len(labels))]
    peak = max(totals, default=0.0) or 1.0
    slot = plot_w / max(len(labels), 1)
    parts = [_frame(title, height), _axis(left, top, plot_h, peak)]
    for i, label in enumerate(labels):
        y = float(top + plot_h)
        x = left + i * slot + slot * 0.1
        for j, (series, values) in enumerate(stacks.items()):
            h = values[i] / peak * plot_h
            if h <= 0:
                continue
            y -= h
            tip = f"{series}, {label}: ${values[i]:,.2f}"
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" '
                f'height="{h:.1f}" fill="{color(j)}"><title>{escape(tip)}</title></rect>'
            )
        if i % max(1, len(labels) // 8) == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="10">{escape(label)}</text>'
            )
    parts += _legend(list(stacks), WIDTH - 150, top)
    return "".join(parts) + "</svg>"


def horizontal_bars(
    title: str, rows: Sequence[tuple[str, Sequence[float]]], series: Sequence[str]
) -> str:
    """One bar per row, stacked from ``series`` values (USD), the row's label on its left."""
    left, top, bar = 220, 30, 22
    height = top + bar * max(len(rows), 1) + 30
    peak = max((sum(values) for _, values in rows), default=0.0) or 1.0
    plot_w = WIDTH - left - (260 if len(series) > 1 else 170)  # room for the legend
    parts = [_frame(title, height)]
    for i, (label, values) in enumerate(rows):
        y = top + i * bar
        x = float(left)
        parts.append(
            f'<text x="{left - 6}" y="{y + bar * 0.65:.1f}" font-size="11" '
            f'text-anchor="end">{escape(label)}</text>'
        )
        for j, value in enumerate(values):
            w = value / peak * plot_w
            if w <= 0:
                continue
            tip = f"{label}, {series[j]}: ${value:,.2f}"
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{bar - 6}" '
                f'fill="{color(j)}"><title>{escape(tip)}</title></rect>'
            )
            x += w
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + bar * 0.65:.1f}" font-size="11">'
            f"${sum(values):,.2f}</text>"
        )
    if len(series) > 1:
        parts += _legend(list(series), WIDTH - 150, top)
    return "".join(parts) + "</svg>"


def _frame(title: str, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}"><text x="10" y="18" font-size="14" '
        f'font-weight="bold">{escape(title)}</text>'
    )


def _axis(left: int, top: int, plot_h: int, peak: float) -> str:
    ticks = []
    for k in range(5):
        value = peak * k / 4
        y = top + plot_h - plot_h * k / 4
        ticks.append(
            f'<line x1="{left}" x2="{WIDTH - 160}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"${value:,.0f}</text>"
        )
    return "".join(ticks)


def _legend(names: Sequence[str], x: int, top: int) -> list[str]:
    return [
        f'<rect x="{x}" y="{top + i * 18}" width="12" height="12" fill="{color(i)}"/>'
        f'<text x="{x + 18}" y="{top + i * 18 + 10}" font-size="11">{escape(name)}</text>'
        for i, name in enumerate(names)
    ]
