"""Dataset-example tiles for the unit page, cut and tinted by the browser from the stored images.

A unit page shows 43 examples. Each tile sends its stored image as it is (WebP, inlined as a data URI, so
images stay behind the login), with the box to show and the heatmap as a translucent picture of one pixel per
heat cell (store.pictures.heat_layer) laid over the box; the browser crops, scales and composites. Decoding,
cropping, tinting and re-encoding 43 images on the server took most of a page's CPU; what is left per tile is
base64 and a PNG of a few dozen pixels. The finished tiles of recently seen units are cached whole.
"""

from __future__ import annotations

import streamlit as st

from dashboard import data, html
from store import pictures

CROP_PX = 160  # the tile's nominal side: a box under half of it is drawn pixelated, larger ones smooth


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)
def unit_tiles(key: data.StoreKey, model_id: str, layer: str, unit: int, heat: bool) -> dict[str, list[dict]]:
    """{'top': [...], 'bottom': [...], 'quantile': [...]}, each tile {src, box, size, pixelated, heat, caption,
    source, activation} as html.examples draws it."""
    rows = data.unit_examples(key, model_id, layer, unit)
    vmax = next((r["activation"] for r in rows if r["kind"] == "top" and r["rank"] == 0), 0.0)
    out: dict[str, list[dict]] = {"top": [], "bottom": [], "quantile": []}
    uris: dict[str, tuple[str, tuple[int, int]]] = {}  # an image shown twice on the page is encoded once
    for r in rows:
        if r.get("image") is None:
            continue
        if r["image_id"] not in uris:
            uris[r["image_id"]] = html.data_uri(r["image"]), pictures.image_size(r["image"])
        src, size = uris[r["image_id"]]
        box = tuple(int(v) for v in r["box"])
        tint = pictures.heat_layer(pictures.heat_array(r["heat"], r["heat_cells"]), vmax) if heat else None
        caption = f"{r['activation']:.3g}"
        if r["kind"] == "quantile" and r["quantile"] is not None:
            caption = f"q{r['quantile'] * 100:g} · {caption}"
        out[r["kind"]].append({"src": src, "box": box, "size": size, "pixelated": box[2] - box[0] < CROP_PX // 2,
                               "heat": html.data_uri(pictures.png_rgba(tint)) if tint is not None else None,
                               "caption": caption, "source": r["image_source"] or r["image_id"],
                               "activation": r["activation"]})
    return out
