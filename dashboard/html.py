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
.ms-ex .ms-crop { position: relative; width: 100%; aspect-ratio: 1; overflow: hidden; border-radius: 4px; }
.ms-ex .ms-crop img { position: absolute; max-width: none; aspect-ratio: auto; border-radius: 0; }
.ms-ex .ms-crop img.ms-px { image-rendering: pixelated; }
.ms-ex .ms-heat { position: absolute; inset: 0; background-size: 100% 100%; }
.ms-ex figcaption { font-size: 12px; line-height: 1.3; padding-top: 2px; font-variant-numeric: tabular-nums; }
.ms-ex figcaption small { display: block; opacity: .6; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.ms-table { border-collapse: collapse; width: 100%; font-size: 14px; }
.ms-table th, .ms-table td { text-align: left; padding: 6px 10px; border-bottom: 1px solid rgba(128, 128, 128, .25); }
.ms-table th { font-weight: 600; opacity: .8; }
.ms-table td.num, .ms-table th.num { text-align: right; font-variant-numeric: tabular-nums; }
.ms-tile .ms-note { font-size: 11px; padding: 0 2px; font-weight: 600; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.ms-fam { display: inline-block; font-size: 10px; line-height: 1.4; margin: 1px 2px 0 0; padding: 0 4px;
  border-radius: 6px; background: rgba(255, 140, 0, .18); }
.ms-notes-head { font-size: 15px; }
.ms-notes-head .ms-notes-label { font-weight: 600; font-size: 18px; }
.ms-notes-head small { display: block; opacity: .65; font-size: 12px; }
.ms-version { white-space: pre-wrap; font-family: monospace; font-size: 13px; padding: 6px;
  border: 1px solid rgba(128, 128, 128, .3); border-radius: 4px; }
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
    vote ({index, label, weight}), shown under the tile, and the team's `label` and `families` (notes)."""
    parts = ['<div class="ms-grid">']
    for t in tiles:
        value = "dead" if t["dead"] else number(t["max"])
        picture = (f'<img src="{data_uri(t["thumb"])}" alt="unit {t["unit"]}" loading="lazy">' if t["thumb"]
                   else '<div class="ms-blank"></div>')
        vote = t.get("vote")
        name = (vote["label"] or f"class {vote['index']}") if vote else ""
        label, fams = t.get("label") or "", t.get("families") or []
        title = (f"unit {t['unit']}" + (f" · {label}" if label else "") + f" · max activation {value}"
                 + (f" · votes most for {name}" if vote else "") + (f" · families: {', '.join(fams)}" if fams else ""))
        parts.append(
            f'<a class="ms-tile{" ms-dead" if t["dead"] else ""}" href="{escape(t["href"])}" target="_self" '
            f'title="{escape(title)}">{picture}'
            f'<div class="ms-label"><b>{t["unit"]}</b><span>{value}</span></div>'
            + (f'<div class="ms-note">{escape(label)}</div>' if label else "")
            + "".join(f'<span class="ms-fam">{escape(f)}</span>' for f in fams)
            + (f'<div class="ms-vote">↑ {escape(name)}</div>' if vote else "") + '</a>')
    parts.append("</div>")
    return "".join(parts)


def examples(tiles: list[dict]) -> str:
    """Tiles: {src (data URI), caption, source}, and optionally the part of the image to show, `box` (left, top,
    right, bottom in the image's pixels, of an image of `size` (width, height)), drawn `pixelated` or smooth,
    under a `heat` layer (a data URI, scaled over the box)."""
    parts = ['<div class="ms-ex-grid">']
    for t in tiles:
        source = escape(t.get("source") or "")
        picture = _boxed(t, source) if t.get("box") else f'<img src="{t["src"]}" alt="{source}">'
        parts.append(f'<figure class="ms-ex" title="{source}">{picture}'
                     f'<figcaption>{escape(t["caption"])}<small>{source}</small></figcaption></figure>')
    parts.append("</div>")
    return "".join(parts)


def _boxed(t: dict, alt: str) -> str:
    """The box of an image filling a square tile, cut and scaled by the browser: the whole image is laid out at
    the scale that makes the box the tile's size, shifted so that the box sits in the tile, and clipped; a box
    that is not square is stretched to the square, as a resized crop would be."""
    left, top, right, bottom = t["box"]
    width, height = t["size"]
    w, h = max(right - left, 1), max(bottom - top, 1)
    place = (f"left: {-100 * left / w:.3f}%; top: {-100 * top / h:.3f}%; width: {100 * width / w:.3f}%; "
             f"height: {100 * height / h:.3f}%")
    heat = f'<div class="ms-heat" style="background-image: url({t["heat"]})"></div>' if t.get("heat") else ""
    sharp = ' class="ms-px"' if t.get("pixelated") else ""
    return f'<div class="ms-crop"><img src="{t["src"]}" alt="{alt}"{sharp} style="{place}">{heat}</div>'


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


NAMED_STYLE = """<style>
.ms-named-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(120px, 1fr)); gap: 10px; }
.ms-pair-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 10px; }
.ms-named, .ms-pair { display: block; text-decoration: none !important; color: inherit !important;
  border-radius: 6px; padding: 4px; border: 1px solid rgba(128, 128, 128, .25); }
.ms-named:hover, .ms-pair a:hover img { border-color: #ff8c00; outline: 1px solid #ff8c00; }
.ms-named img, .ms-named .ms-blank, .ms-pair img, .ms-pair .ms-blank { width: 100%; aspect-ratio: 1;
  display: block; border-radius: 4px; background: rgba(128, 128, 128, .15); }
.ms-pair .ms-two { display: grid; grid-template-columns: 1fr 1fr; gap: 4px; }
.ms-pair a { color: inherit !important; text-decoration: none !important; }
.ms-label { display: flex; justify-content: space-between; gap: 6px; font-size: 12px; padding: 3px 2px 0;
  font-variant-numeric: tabular-nums; }
.ms-label b { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
</style>"""


def _picture(thumb: bytes | None, alt: str) -> str:
    return (f'<img src="{data_uri(thumb)}" alt="{escape(alt)}" loading="lazy">' if thumb
            else '<div class="ms-blank"></div>')


def named_tiles(tiles: list[dict]) -> str:
    """Tiles of units of any layer or model: {href, name, value (short text), title, thumb (bytes or None)}."""
    parts = [NAMED_STYLE, '<div class="ms-named-grid">']
    for t in tiles:
        parts.append(f'<a class="ms-named" href="{escape(t["href"])}" target="_self" title="{escape(t["title"])}">'
                     f'{_picture(t["thumb"], t["name"])}<div class="ms-label"><b>{escape(t["name"])}</b>'
                     f'<span>{escape(t["value"])}</span></div></a>')
    parts.append("</div>")
    return "".join(parts)


def pairs(items: list[dict]) -> str:
    """Matched pairs side by side: {a, b: {href, name, thumb}, value (short text), title}."""
    parts = [NAMED_STYLE, '<div class="ms-pair-grid">']
    for p in items:
        sides = "".join(f'<a href="{escape(s["href"])}" target="_self">{_picture(s["thumb"], s["name"])}</a>'
                        for s in (p["a"], p["b"]))
        parts.append(f'<div class="ms-pair" title="{escape(p["title"])}"><div class="ms-two">{sides}</div>'
                     f'<div class="ms-label"><b>{escape(p["a"]["name"])} ↔ {escape(p["b"]["name"])}</b>'
                     f'<span>{escape(p["value"])}</span></div></div>')
    parts.append("</div>")
    return "".join(parts)


def _when(at: str | None) -> str:
    return (at or "")[:16].replace("T", " ")


def notes_summary(saved) -> str:
    """The head of a unit's notes (store.notes.UnitNotes): its label, family badges, and who wrote what when."""
    who = []
    if saved.label_by:
        who.append(f"label by {saved.label_by}, {_when(saved.label_at)}")
    if saved.note_by:
        who.append(f"note by {saved.note_by}, {_when(saved.note_at)}")
    if saved.stars:
        who.append(f"starred by {len(saved.stars)}")
    label = (f'<span class="ms-notes-label">{escape(saved.label)}</span> ' if saved.label
             else "<span>No label yet.</span> ")
    fams = "".join(f'<span class="ms-fam">{escape(f)}</span>' for f in saved.families)
    line = f"<small>{escape(' · '.join(who))} · revision {saved.revision}</small>" if saved.revision else ""
    return f'<div class="ms-notes-head"><h3 class="ms-notes-title">Notes</h3>{label}{fams}{line}</div>'


def notes_version(label: str, families, note: str) -> str:
    """One side of a save conflict, as plain text."""
    text = f"label: {label}\nfamilies: {', '.join(families)}\nnote:\n{note}"
    return f'<div class="ms-version">{escape(text)}</div>'
