"""Horizontal bar charts as inline SVG: no script, no font or file fetched, so the report
stays one self-contained file that any browser draws the same."""
from __future__ import annotations

from .text import h

LABEL_W, BAR_W, BAR_H, GAP = 300, 380, 14, 8
COLOURS = ("#3b6ea5", "#a5c8ec", "#6a9f58")


def bar_chart(title: str, rows: list, series: list[str], unit: str) -> str:
    """``rows``: (label, [value or None per series]). One group of bars per row, a legend,
    the value written at each bar's end. Empty string when there is nothing to draw."""
    rows = [(label, values) for label, values in rows if any(v for v in values if v)]
    if not rows:
        return ""
    top = max(v for _, values in rows for v in values if v) or 1.0
    group_h = BAR_H * len(series) + GAP
    height = 40 + group_h * len(rows)
    width = LABEL_W + BAR_W + 90
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
           f'<title>{h(title)}</title>',
           f'<text x="0" y="14" class="chart-title">{h(title)}</text>']
    for index, name in enumerate(series):
        x = LABEL_W + index * 140
        out.append(f'<rect x="{x}" y="22" width="10" height="10" fill="{COLOURS[index]}"/>'
                   f'<text x="{x + 14}" y="31">{h(name)}</text>')
    for number, (label, values) in enumerate(rows):
        y = 40 + number * group_h
        out.append(f'<text x="{LABEL_W - 6}" y="{y + BAR_H}" text-anchor="end">'
                   f'{h(label, 48)}</text>')
        for index, value in enumerate(values):
            if not value:
                continue
            bar = max(1.0, BAR_W * value / top)
            by = y + index * BAR_H
            out.append(f'<rect x="{LABEL_W}" y="{by}" width="{bar:.1f}" height="{BAR_H - 2}" '
                       f'fill="{COLOURS[index]}"><title>{h(label)}: {h(series[index])} '
                       f'{value:g} {h(unit)}</title></rect>'
                       f'<text x="{LABEL_W + bar + 4:.1f}" y="{by + BAR_H - 3}">'
                       f'{value:g} {h(unit)}</text>')
    out.append("</svg>")
    return "\n".join(out)
