"""The report's two charts: the latency histogram (inline SVG) and the stage bars.

Pure functions from numbers to HTML text, escaped, with nothing loaded from the
network; :mod:`bucketvision.producer.report_html` places them on the page.
"""

from __future__ import annotations

from html import escape
from typing import Any

STAGES = ("download", "decode", "infer", "upload")
STAGE_COLOURS = dict(zip(STAGES, ("#4dabf7", "#9775fa", "#f76707", "#20c997"), strict=True))


def latency_svg(values: list[float], marks: dict[str, Any], width: int = 640) -> str:
    """A histogram of per-item latency (ms) as SVG bars, with p50/p95/p99 marked."""
    if not values:
        return '<p class="empty">No items, no latencies.</p>'
    height, left, right, top, bottom = 210, 40, 14, 22, 34
    low, high = min(values), max(values)
    p99 = marks.get("p99")
    if p99 is not None and high > 2 * float(p99) > low:  # keep the rare outliers readable
        high = float(p99) * 1.25
    bins = 24 if high > low else 1
    step = (high - low) / bins or 1.0
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int((value - low) / step)))] += 1
    plot_w, plot_h, peak = width - left - right, height - top - bottom, max(counts)

    def x_of(ms: float) -> float:
        return left + (ms - low) / (step * bins) * plot_w

    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="latency">']
    for index, count in enumerate(counts):
        bar_h = plot_h * count / peak
        x, w = left + index * plot_w / bins, plot_w / bins
        edge = "≥ " if index == bins - 1 and high < max(values) else ""
        tip = f"{edge}{low + index * step:.1f}–{low + (index + 1) * step:.1f} ms: {count}"
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - bar_h:.1f}" width="{max(w - 2, 1):.1f}" '
            f'height="{bar_h:.1f}" rx="2" fill="#5c7cfa"><title>{escape(tip)}</title></rect>'
        )
    base = top + plot_h
    parts.append(
        f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" stroke="#9aa5b1"/>'
    )
    for fraction in (0, 0.5, 1):
        ms = low + fraction * step * bins
        anchor = ("start", "middle", "end")[int(fraction * 2)]
        x = left + fraction * plot_w
        parts.append(
            f'<text x="{x:.1f}" y="{base + 15}" text-anchor="{anchor}">{ms:,.1f} ms</text>'
        )
    parts.append(f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak}</text>')
    parts.append(f'<text x="{left - 6}" y="{base}" text-anchor="end">0</text>')
    for offset, name in enumerate(("p50", "p95", "p99")):
        mark = marks.get(name)
        if mark is None or not low <= float(mark) <= high:
            continue
        x = x_of(float(mark))
        near_end = x > width - right - 40  # label on the left of the line at the right edge
        label_x, anchor = (x - 3, "end") if near_end else (x + 3, "start")
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{base}" stroke="#e8590c" '
            f'stroke-dasharray="4 3"/><text x="{label_x:.1f}" y="{top - 8 + 11 * offset}" '
            f'text-anchor="{anchor}" style="fill:#e8590c">{name}</text>'
        )
    parts.append(
        f'<text x="{width - right}" y="{height - 2}" text-anchor="end">items per bin</text>'
    )
    return "".join(parts) + "</svg>"


def stages_html(stages: dict[str, Any]) -> str:
    """Seconds per pipeline stage, summed over batches, as horizontal bars."""
    values = {name: float(stages.get(name) or 0.0) for name in STAGES}
    peak = max(values.values()) or 1.0
    rows = [
        f'<div class="stage" data-name="stage_{name}"><span>{name}</span><span class="bar">'
        f'<i style="width:{100 * value / peak:.1f}%;background:{STAGE_COLOURS[name]}"></i></span>'
        f"<b>{value:,.2f} s</b></div>"
        for name, value in values.items()
    ]
    total = sum(values.values())
    shares = "".join(
        f'<i style="width:{100 * value / total:.2f}%;background:{STAGE_COLOURS[name]}" '
        f'title="{name} {100 * value / total:.0f}%"></i>'
        for name, value in values.items()
        if total and value
    )
    split = ", ".join(
        f"{name} {100 * value / total:.0f}%" for name, value in values.items() if total
    )
    return (
        "".join(rows)
        + f'<div class="share">{shares}</div><p class="total">total {total:,.2f} s'
        + (f" · {split}" if split else "")
        + "</p>"
    )


def confidence_svg(confidence: dict[str, Any], width: int = 640) -> str:
    """The job's histogram of top confidence beside the model card's, as shares (SVG bars).

    Each of the ten bins of [0, 1] has two bars: the job's share of items (blue) and the
    share the model gave on its evaluation split (grey), so a shift shows at a glance.
    """
    observed = [int(count) for count in confidence.get("histogram") or []]
    reference = [int(count) for count in confidence.get("reference") or []]
    if not sum(observed):
        return '<p class="empty">No item had a confidence.</p>'
    height, left, right, top, bottom = 190, 40, 14, 18, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    shares = [count / sum(observed) for count in observed]
    card = [count / sum(reference) for count in reference] if sum(reference) else []
    peak = max(shares + card) or 1.0
    slot = plot_w / len(shares)
    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="confidence">'
    ]
    for index, share in enumerate(shares):
        low = index / len(shares)
        pairs = [("#4dabf7", share, "job")] + ([("#adb5bd", card[index], "card")] if card else [])
        for offset, (colour, value, who) in enumerate(pairs):
            bar_h, bar_w = plot_h * value / peak, (slot - 4) / len(pairs)
            x = left + index * slot + 2 + offset * bar_w
            tip = f"{who}: {100 * value:.1f}% of items at {low:.1f}–{low + 0.1:.1f}"
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{bar_w:.1f}"'
                f' height="{bar_h:.1f}" fill="{colour}"><title>{escape(tip)}</title></rect>'
            )
        parts.append(
            f'<text x="{left + index * slot + slot / 2:.1f}" y="{height - 18}" '
            f'text-anchor="middle">{low:.1f}</text>'
        )
    legend = "blue: this job · grey: the model card's evaluation split" if card else "this job"
    parts.append(f'<text x="{left}" y="{height - 2}">{escape(legend)}</text>')
    return "".join(parts) + "</svg>"
