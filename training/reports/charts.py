"""Small inline-SVG charts for the HTML reports: bars, lines, a reliability diagram.

Hand-written SVG rather than a plotting library: the report stays one self-contained file with crisp,
selectable text, nothing to install or download, and the same bytes for the same numbers. Every chart
carries a title, axis labels and a legend; the report adds the one-line takeaway under it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#2f6db5", "#e07b39", "#3a9a5b", "#b4464b", "#7b5ea7", "#8c8c8c")
FONT = "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif"


def pct(x: float) -> str:
    """A share as the report's text writes it: a percentage with one decimal."""
    return f"{x:.1%}"


def _nice_max(value: float) -> float:
    """An axis maximum at or above value with four round ticks (steps of 1, 2, 2.5, 3, 4, 5, 6, 8 x 10^n)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    step = value / 4
    exponent = 10 ** math.floor(math.log10(step))
    for nice in (1, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step <= nice * exponent * (1 + 1e-9):
            return 4 * nice * exponent
    return 40 * exponent


def _fmt(value: float, percent: bool) -> str:
    if percent:
        return f"{value:.0%}" if abs(value) >= 0.1 or value == 0 else f"{value:.1%}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def _x_axis_label(x_label: str, left: float, plot_w: float, height: int) -> str:
    """The x axis title, centred under the plot area."""
    x = left + plot_w / 2
    return f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" fill="#333">{escape(x_label)}</text>'


def _frame(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" style="{FONT};font-size:13px;max-width:100%;height:auto">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    out, cursor = [], x
    for i, name in enumerate(names):
        out.append(f'<rect x="{cursor:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{PALETTE[i % 6]}"/>')
        out.append(f'<text x="{cursor + 14:.1f}" y="{y:.1f}">{escape(name)}</text>')
        cursor += 24 + 7 * len(name)
    return out


def _y_axis(
    left: float, top: float, plot_h: float, plot_w: float, y_max: float, label: str, percent: bool
) -> list[str]:
    out = []
    for k in range(5):
        value = y_max * k / 4
        y = top + plot_h - plot_h * k / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_fmt(value, percent)}</text>')
    out.append(
        f'<text transform="translate({left - 48},{top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" '
        f'fill="#333">{escape(label)}</text>'
    )
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>')
    return out


def bar_chart(
    categories: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    percent: bool = False,
    width: int = 640,
    height: int = 320,
    value_labels: bool = True,
) -> str:
    """Vertical grouped bars: one group per category, one bar per series."""
    left, right, top, bottom = 70, 20, 34, 78
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    y_max = _nice_max(max(values, default=1.0))
    body = _y_axis(left, top, plot_h, plot_w, y_max, y_label, percent)
    group_w = plot_w / max(1, len(categories))
    bar_w = min(40.0, group_w * 0.8 / max(1, len(series)))
    for c, category in enumerate(categories):
        x0 = left + c * group_w + (group_w - bar_w * len(series)) / 2
        for s, (_name, vs) in enumerate(series.items()):
            value = vs[c] if c < len(vs) and vs[c] is not None and math.isfinite(vs[c]) else 0.0
            h = plot_h * value / y_max
            x, y = x0 + s * bar_w, top + plot_h - h
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.92:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{PALETTE[s % 6]}"><title>{escape(category)}: {_fmt(value, percent)}</title></rect>'
            )
            if value_labels and bar_w >= 14:
                body.append(
                    f'<text x="{x + bar_w * 0.46:.1f}" y="{y - 3:.1f}" text-anchor="middle" font-size="10" '
                    f'fill="#333">{_fmt(value, percent)}</text>'
                )
        label = category if len(category) <= 16 else category[:15] + "…"
        cx = left + (c + 0.5) * group_w
        rotate = len(categories) > 6
        anchor = "end" if rotate else "middle"
        transform = f' transform="rotate(-35 {cx:.1f} {top + plot_h + 16:.1f})"' if rotate else ""
        body.append(
            f'<text x="{cx:.1f}" y="{top + plot_h + 16:.1f}" text-anchor="{anchor}"{transform} fill="#333">'
            f"{escape(label)}<title>{escape(category)}</title></text>"
        )
    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>')
    body.append(_x_axis_label(x_label, left, plot_w, height))
    if len(series) > 1:
        body += _legend(list(series), left, 18)
    return _frame(width, height, title, body)


def hbar_chart(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    title: str,
    x_label: str,
    width: int = 640,
    percent: bool = False,
) -> str:
    """Horizontal grouped bars, for long labels (item titles)."""
    left, right, top, bottom = 236, 40, 34, 44
    row_h = 14 * max(1, len(series)) + 10
    height = top + bottom + row_h * max(1, len(labels))
    plot_w = width - left - right
    values = [v for vs in series.values() for v in vs if v is not None]
    x_max = _nice_max(max(values, default=1.0))
    body = []
    for k in range(5):
        x = left + plot_w * k / 4
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#e3e3e3"/>')
        body.append(
            f'<text x="{x:.1f}" y="{height - bottom + 14}" text-anchor="middle" fill="#555">'
            f"{_fmt(x_max * k / 4, percent)}</text>"
        )
    for r, label in enumerate(labels):
        y0 = top + r * row_h + 5
        short = label if len(label) <= 32 else label[:31] + "…"  # ~7 px a character fits the left margin
        body.append(
            f'<text x="{left - 6}" y="{y0 + row_h / 2:.1f}" text-anchor="end" fill="#333">{escape(short)}'
            f"<title>{escape(label)}</title></text>"
        )
        for s, (name, vs) in enumerate(series.items()):
            value = vs[r] or 0.0
            w = plot_w * value / x_max
            y = y0 + s * 14
            body.append(
                f'<rect class="bar" x="{left}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="12" '
                f'fill="{PALETTE[s % 6]}">'
                f"<title>{escape(label)} — {escape(name)}: {_fmt(value, percent)}</title></rect>"
            )
            body.append(
                f'<text x="{left + w + 4:.1f}" y="{y + 10:.1f}" font-size="10" fill="#333">'
                f"{_fmt(value, percent)}</text>"
            )
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>')
    body.append(_x_axis_label(x_label, left, plot_w, height))
    if len(series) > 1:
        body += _legend(list(series), left, 18)
    return _frame(width, height, title, body)


def line_chart(
    x_labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    markers: Sequence[bool] | None = None,
    marker_label: str = "",
    width: int = 640,
    height: int = 320,
    percent: bool = False,
) -> str:
    """Lines over an ordered x axis (nights); `markers` rings the first series' points where true."""
    left, right, top, bottom = 70, 20, 34, 78
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    y_max = _nice_max(max(values, default=1.0))
    body = _y_axis(left, top, plot_h, plot_w, y_max, y_label, percent)
    n = max(1, len(x_labels))

    def px(i: int) -> float:
        return left + plot_w * (i + 0.5) / n

    for s, (name, vs) in enumerate(series.items()):
        points = [(px(i), top + plot_h - plot_h * v / y_max) for i, v in enumerate(vs) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            body.append(f'<polyline points="{path}" fill="none" stroke="{PALETTE[s % 6]}" stroke-width="2"/>')
        for i, v in enumerate(vs):
            if v is None:
                continue
            x, y = px(i), top + plot_h - plot_h * v / y_max
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{PALETTE[s % 6]}">'
                f"<title>{escape(name)} {escape(x_labels[i])}: {_fmt(v, percent)}</title></circle>"
            )
            if s == 0 and markers is not None and i < len(markers) and markers[i]:
                body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="none" stroke="#222" stroke-width="1.5"/>')
    for i, label in enumerate(x_labels):
        body.append(
            f'<text x="{px(i):.1f}" y="{top + plot_h + 16}" text-anchor="end" transform="rotate(-35 {px(i):.1f} '
            f'{top + plot_h + 16})" fill="#333">{escape(label)}</text>'
        )
    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>')
    body.append(_x_axis_label(x_label, left, plot_w, height))
    names = list(series) + ([marker_label] if markers is not None and marker_label else [])
    legend = _legend(list(series), left, 18)
    if markers is not None and marker_label:
        x = left + sum(24 + 7 * len(n) for n in series)
        legend += [
            f'<circle cx="{x + 5}" cy="14" r="6" fill="none" stroke="#222" stroke-width="1.5"/>',
            f'<text x="{x + 14}" y="18">{escape(marker_label)}</text>',
        ]
    body += legend if names else []
    return _frame(width, height, title, body)


def reliability_chart(
    predicted: Sequence[float],
    observed: Sequence[float],
    counts: Sequence[int],
    *,
    title: str,
    x_label: str = "predicted probability (bin average)",
    y_label: str = "observed frequency",
    width: int = 560,
    height: int = 400,
) -> str:
    """Reliability diagram: bins of predicted probability vs how often the event happened; the diagonal is
    perfect calibration. Circle area grows with the number of predictions in the bin."""
    left, right, top, bottom = 70, 24, 34, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_max(max([*predicted, *observed, 1e-3]) * 1.05)
    body = _y_axis(left, top, plot_h, plot_w, top_value, y_label, percent=True)

    def pos(p: float, o: float) -> tuple[float, float]:
        return left + plot_w * p / top_value, top + plot_h - plot_h * o / top_value

    x1, y1 = pos(top_value, top_value)
    body.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="#999" stroke-dasharray="5 4"/>'
    )
    for k in range(5):
        x = left + plot_w * k / 4
        body.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#555">'
            f"{_fmt(top_value * k / 4, True)}</text>"
        )
    biggest = max(counts, default=1) or 1
    points = [pos(p, o) for p, o in zip(predicted, observed, strict=True)]
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(f'<polyline points="{path}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5"/>')
    for (x, y), p, o, n in zip(points, predicted, observed, counts, strict=True):
        r = 3 + 9 * math.sqrt(n / biggest)
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{PALETTE[0]}" fill-opacity="0.55" '
            f'stroke="{PALETTE[0]}">'
            f"<title>predicted {p:.2%}, observed {o:.2%}, {n:,} predictions</title></circle>"
        )
    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>')
    body.append(_x_axis_label(x_label, left, plot_w, height))
    body.append(f'<text x="{left + 8}" y="{top + 12}" fill="#777" font-size="11">dashed: perfectly calibrated</text>')
    return _frame(width, height, title, body)
