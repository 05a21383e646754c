"""The HTML of ``bucketvision report``: one self-contained page.

Inline CSS, the latency histogram as inline SVG bars and the thumbnails as
base64 ``data:`` URIs: the page loads nothing from the network, so it can be
mailed, archived or opened straight from S3. Every text from the bucket is
escaped.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from html import escape
from typing import Any

from bucketvision.infra.s3 import parse_s3_uri
from bucketvision.producer.report_charts import confidence_svg, latency_svg, stages_html
from bucketvision.producer.report_data import ErrorGroup, ReportData
from bucketvision.producer.report_thumbs import Tile, colour

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f6f8;color:#1f2933;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1220px;margin:0 auto;padding:24px 28px 40px}
header h1{margin:0;font-size:22px;font-weight:650}header h1 code{font-size:20px;color:#364fc7}
.sub{color:#52606d;margin:6px 0 0}.sub code{font-size:12.5px}
.chip{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;font-weight:600;
background:#e7ecf5;color:#364fc7;margin-left:6px;vertical-align:middle}
.chip.finished{background:#d3f9d8;color:#2b8a3e}.chip.failed{background:#ffe3e3;color:#c92a2a}
.banner{margin-top:14px;padding:10px 14px;border-radius:8px;background:#fff5f5;color:#c92a2a;
border:1px solid #ffc9c9}
.figs{display:grid;grid-template-columns:repeat(9,1fr);gap:10px;margin:20px 0}
.fig{background:#fff;border-radius:10px;padding:12px 12px;box-shadow:0 1px 2px #0000001a;
white-space:nowrap}
.fig .n{display:block;font-size:12px;color:#7b8794;text-transform:uppercase;letter-spacing:.04em}
.fig .v{font-size:21px;font-weight:650;font-variant-numeric:tabular-nums}.fig.ok .v{color:#2b8a3e}
.fig.error .v{color:#c92a2a}.fig.skipped .v{color:#7b8794}
.fig small{font-size:13px;color:#7b8794;font-weight:400}
.panels{display:grid;grid-template-columns:3fr 2fr;gap:16px}
section.card{background:#fff;border-radius:10px;padding:16px 18px;box-shadow:0 1px 2px #0000001a;
margin-bottom:16px}
h2{font-size:15px;margin:0 0 10px;font-weight:650}h2 small{color:#7b8794;font-weight:400}
svg text{font:11px system-ui,"DejaVu Sans",sans-serif;fill:#52606d}
.stage{display:grid;grid-template-columns:72px 1fr 64px;align-items:center;gap:8px;margin:9px 0}
.stage .bar{height:14px;border-radius:4px;background:#edf0f3;overflow:hidden}
.stage .bar i{display:block;height:100%}
.stage b{text-align:right;font-weight:500;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:7px 8px;border-bottom:1px solid #edf0f3;vertical-align:top}
th{font-size:12px;color:#7b8794;font-weight:600}th:first-child{width:210px}
th:nth-child(2){width:70px}td code{font-size:12px;word-break:break-all}
td.count{font-weight:650;color:#c92a2a}
.share{display:flex;height:10px;border-radius:5px;overflow:hidden;background:#edf0f3;
margin:18px 0 6px}
.share i{display:block;height:100%}.total{color:#52606d;margin:0;font-size:13px}
.examples div{margin-bottom:4px}.examples span{color:#52606d}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:11px;height:11px;border-radius:3px;margin-right:5px;
vertical-align:-1px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(176px,1fr));gap:12px}
.tile{margin:0;background:#fff;border:1px solid #e4e7eb;border-radius:8px;overflow:hidden}
.thumb{aspect-ratio:1;display:flex;align-items:center;justify-content:center;background:#e9edf1}
.thumb img{max-width:100%;max-height:100%;display:block}
.thumb.err{background:#e03131;color:#fff;font-weight:650;padding:10px;text-align:center}
.thumb.none{color:#7b8794;font-size:12px;padding:10px;text-align:center}
figcaption{padding:7px 9px 8px;font-size:12.5px;line-height:1.35}
figcaption .l{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
figcaption b{font-size:14px}figcaption .d{color:#52606d;margin-left:6px}
figcaption .k{display:block;color:#7b8794;font-size:11px;white-space:nowrap;overflow:hidden;
text-overflow:ellipsis}
.tile.error figcaption b{color:#c92a2a}.empty{color:#7b8794;padding:8px 0}
footer{color:#9aa5b1;font-size:12px;margin-top:18px}
@media (max-width:1000px){.figs{grid-template-columns:repeat(auto-fit,minmax(120px,1fr))}
@media (max-width:820px){.panels{grid-template-columns:1fr}
"""


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):,.{digits}f}"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' * (count != 1)}"


def _when(value: Any) -> str:
    """An ISO timestamp of the summary as ``YYYY-MM-DD HH:MM:SS UTC``."""
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return str(value or "–")


def _figure(name: str, label: str, value: str, unit: str = "", css: str = "") -> str:
    small = f" <small>{escape(unit)}</small>" if unit else ""
    return (
        f'<div class="fig {css}" data-name="{name}"><span class="n">{escape(label)}</span>'
        f'<span class="v">{escape(value)}</span>{small}</div>'
    )


def figures(summary: dict[str, Any]) -> str:
    """The row of summary numbers."""
    latency = summary.get("latency_ms") or {}
    cells = [
        _figure("total", "Items", _num(summary.get("total"))),
        _figure("ok", "OK", _num(summary.get("ok")), css="ok"),
        _figure("error", "Errors", _num(summary.get("error")), css="error"),
        _figure("skipped", "Skipped", _num(summary.get("skipped")), css="skipped"),
        _figure("wall_seconds", "Wall time", _num(summary.get("wall_seconds")), "s"),
        _figure("images_per_second", "Images/s", _num(summary.get("images_per_second"))),
    ]
    for name in ("p50", "p95", "p99"):
        cells.append(
            _figure(f"latency_{name}", f"{name} latency", _num(latency.get(name), 1), "ms")
        )
    if summary.get("review"):
        routed = _num(summary["review"].get("routed"))
        cells.append(_figure("review", "To review", routed, f"below {summary['review']['below']}"))
    return f'<div class="figs">{"".join(cells)}</div>'


def errors_html(errors: list[ErrorGroup]) -> str:
    """The errors table: type, count, example keys and messages."""
    if not errors:
        return '<p class="empty">No errors.</p>'
    rows = []
    for group in errors:
        examples = "".join(
            f"<div><code>{escape(key)}</code><br><span>{escape(message)}</span></div>"
            for key, message in group.examples
        )
        rows.append(
            f"<tr><td><b>{escape(group.type)}</b></td><td class=count>{group.count:,}</td>"
            f'<td class="examples">{examples}</td></tr>'
        )
    head = "<tr><th>Type</th><th>Count</th><th>Examples (key and message)</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def legend_html(data: ReportData) -> str:
    """Colour keys of the drawn boxes (detect) or mask classes (segment)."""
    entries: list[tuple[str, tuple[int, int, int]]] = list(data.colours.items())
    if data.summary.get("task") == "segment":
        for line in data.lines:
            classes = (line.get("result") or {}).get("classes")
            if classes:
                entries = [(name, colour(index)) for index, name in enumerate(classes[1:])]
                break
    spans = "".join(
        f'<span><i style="background:rgb{rgb}"></i>{escape(name)}</span>' for name, rgb in entries
    )
    return f'<p class="legend">{spans}</p>' if spans else ""


def _short(key: str, prefix: str) -> str:
    return key[len(prefix) :] if prefix and key.startswith(prefix) else key


def tile_html(tile: Tile, prefix: str) -> str:
    """One grid cell: the thumbnail (or a coloured box) and its caption."""
    if tile.status == "error":
        thumb = f'<div class="thumb err">{escape(tile.caption)}</div>'
    elif tile.image is not None:
        data = base64.b64encode(tile.image).decode("ascii")
        thumb = f'<div class="thumb"><img src="data:{tile.mime};base64,{data}" alt=""></div>'
    else:
        thumb = f'<div class="thumb none">{escape(tile.detail or "no image")}</div>'
    caption = "error" if tile.status == "error" else tile.caption
    detail = f'<span class="d">{escape(tile.detail)}</span>' if tile.detail else ""
    title = escape(f"{tile.key}\n{tile.detail}".strip())
    return (
        f'<figure class="tile {escape(tile.status)}" title="{title}">{thumb}'
        f'<figcaption><div class="l"><b>{escape(caption)}</b>{detail}</div>'
        f'<span class="k">{escape(_short(tile.key, prefix))}</span></figcaption></figure>'
    )


def _confidence_panel(summary: dict[str, Any]) -> str:
    """Top confidence, the job's beside the card's, with the PSI (and drift, when above 0.2)."""
    confidence = summary.get("confidence")
    if not confidence:
        return ""
    psi = confidence.get("psi")
    said = "no card histogram" if psi is None else f"PSI {psi:.2f}"
    if confidence.get("drift"):
        said += " · drift: unlike the images the model was checked on"
    return (
        f'<section class="card" id="confidence"><h2>Top confidence <small>{escape(said)}'
        f"</small></h2>{confidence_svg(confidence)}</section>"
    )


def render_report(data: ReportData, now: datetime | None = None) -> str:
    """The whole page for ``data``."""
    summary = data.summary
    state = str(summary.get("state") or "unknown")
    source = str(summary.get("input") or "")
    prefix = parse_s3_uri(source).prefix if source.startswith("s3://") else ""
    latencies = [
        float(line["latency_ms"]) for line in data.lines if line.get("latency_ms") is not None
    ]
    failure = summary.get("failure")
    banner = f'<div class="banner">Job failed: {escape(str(failure))}</div>' if failure else ""
    tiles = "".join(tile_html(tile, prefix) for tile in data.tiles)
    grid = f'<div class="grid">{tiles}</div>' if tiles else '<p class="empty">No items to show.</p>'
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    job_id = escape(str(summary.get("job_id")))
    folder = data.uri.rsplit("/", 1)[0] + "/"
    errored = sum(group.count for group in data.errors)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>bucketvision report · {job_id}</title><style>{CSS}</style></head>
<body><main>
<header><h1>Job <code>{job_id}</code><span class="chip {escape(state)}">{escape(state)}</span>
<span class="chip">{escape(str(summary.get("task")))}</span></h1>
<p class="sub">model <code>{escape(str(summary.get("model")))}</code> ·
<code>{escape(source)}</code> → <code>{escape(str(summary.get("output")))}</code><br>
submitted {escape(_when(summary.get("submitted_at")))} · finished
{escape(_when(summary.get("finished_at")))} · job files <code>{escape(folder)}</code></p>
{banner}</header>
{figures(summary)}
<div class="panels">
<section class="card"><h2>Latency per item <small>ms, {len(latencies):,} items</small></h2>
{latency_svg(latencies, summary.get("latency_ms") or {})}</section>
<section class="card"><h2>Time by stage <small>seconds summed over batches</small></h2>
{stages_html(summary.get("stage_seconds") or {})}</section>
{_confidence_panel(summary)}
</div>
<section class="card" id="errors"><h2>Errors <small>{_plural(errored, "item")},
{_plural(len(data.errors), "type")}</small></h2>{errors_html(data.errors)}</section>
<section class="card" id="items"><h2>Items <small>{len(data.tiles):,} of
{len(data.lines):,} shown</small></h2>{legend_html(data)}{grid}</section>
<footer>bucketvision report · generated {stamp} · {escape(data.uri)}</footer>
</main></body></html>
"""
