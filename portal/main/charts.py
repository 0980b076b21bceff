"""Charts drawn on the server as SVG: no script, no library, no CDN. Plain Python (no Flask):
a series in, escaped markup out, with a title and description for screen readers and the same
figures as a table for whoever would rather read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 36, 8, 10, 28  # room for the axis labels


@dataclass(frozen=True)
class Series:
    label: str  # "opened", "closed": also the bars' CSS class
    values: list[int]  # one per day


def _nice_top(peak: int) -> int:
    """The y axis' top: the peak rounded up to 1, 2 or 5 times a power of ten (at least 1)."""
    step = 1
    while True:
        for k in (1, 2, 5):
            if peak <= k * step:
                return k * step
        step *= 10


def bar_geometry(days: int, series: int, value: int, top: int, day: int, index: int) -> tuple[float, float, float, float]:
    """(x, y, width, height) of one bar: day `day` of `days`, series `index` of `series`, side by side."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / days
    width = slot * 0.8 / series
    height = plot_h * value / top
    x = LEFT + day * slot + slot * 0.1 + index * width
    return round(x, 2), round(TOP + plot_h - height, 2), round(width, 2), round(height, 2)


def daily_bars(chart_id: str, title: str, days: list[date], series: list[Series]) -> Markup:
    """A bar chart of counts per day (bars side by side per day; a zero draws no bar), its
    axes labelled (counts on the left, the first, middle and last day below), then a table."""
    top = _nice_top(max((v for s in series for v in s.values), default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    totals = ", ".join(f"{sum(s.values)} {s.label}" for s in series)
    desc = f"Per day from {days[0]:%d %b} to {days[-1]:%d %b}: {totals}." if days else "No days."
    out = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
           f'<title id="{chart_id}-title">{escape(title)}</title>',
           f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
           f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}"/>',
           f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>']
    for value in (0, top // 2, top) if top > 1 else (0, top):
        y = round(TOP + plot_h - plot_h * value / top, 2)
        out.append(f'<text class="tick" x="{LEFT - 4}" y="{y}" text-anchor="end" dominant-baseline="middle">{value}</text>')
    for day in sorted({0, len(days) // 2, len(days) - 1}) if days else ():
        x = bar_geometry(len(days), 1, 0, top, day, 0)[0] + (WIDTH - LEFT - RIGHT) / len(days) * 0.4
        out.append(f'<text class="tick" x="{round(x, 2)}" y="{HEIGHT - 8}" text-anchor="middle">{days[day]:%d %b}</text>')
    for index, s in enumerate(series):
        for day, value in enumerate(s.values):
            if value:
                x, y, w, h = bar_geometry(len(days), len(series), value, top, day, index)
                out.append(f'<rect class="bar {escape(s.label)}" x="{x}" y="{y}" width="{w}" height="{h}" '
                           f'data-value="{value}"><title>{days[day]:%d %b}: {value} {escape(s.label)}</title></rect>')
    out.append("</svg>")
    return Markup("".join(out)) + _table(title, days, series)


def _table(title: str, days: list[date], series: list[Series]) -> Markup:
    head = "".join(f'<th scope="col" class="num">{escape(s.label)}</th>' for s in series)
    rows = "".join(f'<tr><th scope="row">{d:%d %b}</th>'
                   + "".join(f'<td class="num">{s.values[i]}</td>' for s in series) + "</tr>"
                   for i, d in enumerate(days) if any(s.values[i] for s in series))
    body = rows or f'<tr><td colspan="{len(series) + 1}">None in these days.</td></tr>'
    return Markup(f'<details class="chart-table"><summary>{escape(title)} as a table</summary>'
                  f'<table><thead><tr><th scope="col">Day</th>{head}</tr></thead><tbody>{body}</tbody></table></details>')


@dataclass(frozen=True)
class Bar:
    label: str  # what the bar is about, on its left
    value: float | None  # None: nothing to draw (the words say why)
    words: str  # the value as a person reads it, on its right
    late: bool = False  # drawn in the warning colour
    mark: float | None = None  # a second figure on the same scale (a 90th percentile): a whisker past the bar


ROW, LABEL_W, WORDS_W = 22, 200, 130


def horizontal_bars(chart_id: str, title: str, bars: list[Bar], words_width: int = WORDS_W) -> Markup:
    """One bar per row, the longest value (or mark) the full width; each row labelled on the left
    and its value in words on the right, then the same as a table. A mark draws a whisker from
    the bar's end to it."""
    top = max((v for b in bars for v in (b.value, b.mark) if v), default=0) or 1
    plot_w = WIDTH - LABEL_W - words_width
    height = max(1, len(bars)) * ROW + 4
    desc = "; ".join(f"{b.label}: {b.words}" for b in bars) or "Nothing to show."
    out = [f'<svg class="chart bars" viewBox="0 0 {WIDTH} {height}" role="img" '
           f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
           f'<title id="{chart_id}-title">{escape(title)}</title>',
           f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
           f'<line class="axis" x1="{LABEL_W}" y1="0" x2="{LABEL_W}" y2="{height}"/>']
    for i, b in enumerate(bars):
        middle = i * ROW + ROW / 2 + 2
        out.append(f'<text class="tick" x="{LABEL_W - 6}" y="{middle}" text-anchor="end" '
                   f'dominant-baseline="middle">{escape(b.label)}</text>')
        width = round(plot_w * (b.value or 0) / top, 2)
        if b.value:
            out.append(f'<rect class="bar{" late" if b.late else ""}" x="{LABEL_W}" y="{i * ROW + 5}" '
                       f'width="{width}" height="{ROW - 6}" data-value="{b.value:g}"/>')
        if b.mark and b.mark > (b.value or 0):
            end = round(LABEL_W + plot_w * b.mark / top, 2)
            out.append(f'<path class="mark" d="M{LABEL_W + width} {middle}H{end}M{end} {i * ROW + 7}V{(i + 1) * ROW}" '
                       f'data-value="{b.mark:g}"/>')
            width = end - LABEL_W
        out.append(f'<text class="tick" x="{round(LABEL_W + width + 6, 2)}" y="{middle}" '
                   f'dominant-baseline="middle">{escape(b.words)}</text>')
    out.append("</svg>")
    rows = "".join(f'<tr><th scope="row">{escape(b.label)}</th><td>{escape(b.words)}</td></tr>' for b in bars)
    table = (f'<details class="chart-table"><summary>{escape(title)} as a table</summary>'
             f'<table><tbody>{rows}</tbody></table></details>')
    return Markup("".join(out)) + Markup(table)
