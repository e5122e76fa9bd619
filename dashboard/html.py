"""HTML blocks rendered with one st.html call each: a gallery of 128 tiles is one element, not 128.

Pure functions from rows to strings; every value from the store or the URL is escaped here.
"""

from __future__ import annotations

import base64
from html import escape

STYLE = """
<style>
.ms-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(96px, 1fr)); gap: 10px; }
.ms-tile { display: block; text-decoration: none !important; color: inherit !important; border-radius: 6px;
  padding: 4px; border: 1px solid rgba(128, 128, 128, .25); }
.ms-tile:hover { border-color: #ff8c00; }
.ms-tile img, .ms-tile .ms-blank { width: 100%; aspect-ratio: 1; display: block; border-radius: 4px;
  image-rendering: auto; background: rgba(128, 128, 128, .15); }
.ms-tile .ms-label { display: flex; justify-content: space-between; font-size: 12px; padding: 2px 2px 0; }
.ms-tile .ms-label b { font-weight: 600; }
.ms-tile .ms-label span { opacity: .7; font-variant-numeric: tabular-nums; }
.ms-tile.ms-dead { opacity: .45; }
.ms-tile .ms-vote { font-size: 11px; padding: 0 2px; opacity: .8; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.ms-ex-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(112px, 1fr)); gap: 10px; }
.ms-ex { margin: 0; }
.ms-ex img { width: 100%; aspect-ratio: 1; display: block; border-radius: 4px; }
.ms-ex figcaption { font-size: 12px; line-height: 1.3; padding-top: 2px; font-variant-numeric: tabular-nums; }
.ms-ex figcaption small { display: block; opacity: .6; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.ms-table { border-collapse: collapse; width: 100%; font-size: 14px; }
.ms-table th, .ms-table td { text-align: left; padding: 6px 10px; border-bottom: 1px solid rgba(128, 128, 128, .25); }
.ms-table th { font-weight: 600; opacity: .8; }
.ms-table td.num, .ms-table th.num { text-align: right; font-variant-numeric: tabular-nums; }
</style>
"""

HIDE_CHROME = """
<style>
header[data-testid="stHeader"], [data-testid="stToolbar"], [data-testid="stDecoration"] { display: none; }
.block-container, [data-testid="stMainBlockContainer"] { padding-top: 1rem; }
</style>
"""


def data_uri(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        mime = "image/png"
    else:
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def number(value) -> str:
    if value is None or value != value:  # None or NaN: not computed
        return "–"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def gallery(tiles: list[dict]) -> str:
    """Tiles: {href, unit, max, dead, thumb (bytes or None)}, and optionally `vote`: the unit's strongest class
    vote ({index, label, weight}), shown under the tile."""
    parts = ['<div class="ms-grid">']
    for t in tiles:
        value = "dead" if t["dead"] else number(t["max"])
        picture = (f'<img src="{data_uri(t["thumb"])}" alt="unit {t["unit"]}" loading="lazy">' if t["thumb"]
                   else '<div class="ms-blank"></div>')
        vote = t.get("vote")
        name = (vote["label"] or f"class {vote['index']}") if vote else ""
        title = f"unit {t['unit']} · max activation {value}" + (f" · votes most for {name}" if vote else "")
        parts.append(
            f'<a class="ms-tile{" ms-dead" if t["dead"] else ""}" href="{escape(t["href"])}" target="_self" '
            f'title="{escape(title)}">{picture}'
            f'<div class="ms-label"><b>{t["unit"]}</b><span>{value}</span></div>'
            + (f'<div class="ms-vote">↑ {escape(name)}</div>' if vote else "") + '</a>')
    parts.append("</div>")
    return "".join(parts)


def examples(tiles: list[dict]) -> str:
    """Tiles: {src (data URI), caption, source}."""
    parts = ['<div class="ms-ex-grid">']
    for t in tiles:
        source = escape(t.get("source") or "")
        parts.append(f'<figure class="ms-ex" title="{source}"><img src="{t["src"]}" alt="{source}">'
                     f'<figcaption>{escape(t["caption"])}<small>{source}</small></figcaption></figure>')
    parts.append("</div>")
    return "".join(parts)


def table(columns: list[tuple[str, str]], rows: list[dict]) -> str:
    """columns: (key, header); a header starting with '#' is right-aligned numbers. Cells are escaped text,
    except a cell given as {'href': ..., 'text': ...}, which becomes a link."""
    head = "".join(f'<th class="num">{escape(h[1:])}</th>' if h.startswith("#") else f"<th>{escape(h)}</th>"
                   for _, h in columns)
    body = []
    for row in rows:
        cells = []
        for key, h in columns:
            value = row.get(key)
            if isinstance(value, dict):
                text = f'<a href="{escape(value["href"])}" target="_self">{escape(str(value["text"]))}</a>'
            else:
                text = escape("" if value is None else str(value))
            cells.append(f'<td class="num">{text}</td>' if h.startswith("#") else f"<td>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="ms-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
