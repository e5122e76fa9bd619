"""Dataset-example pictures for the unit page: crop, heatmap overlay, encode; bounded caches on both ends.

A unit page shows 43 pictures. Decoding the stored images dominates, and neighbouring units share most of
them, so decoded images are cached by id; the finished tiles of recently seen units are cached whole.
"""

from __future__ import annotations

import io

import streamlit as st
from PIL import Image

from dashboard import data, html
from store import pictures

CROP_PX = 160


@st.cache_resource(max_entries=256, show_spinner=False)
def _decoded(key: data.StoreKey, image_id: str, _blob: bytes) -> Image.Image:
    # Shared between sessions: callers only crop it, which returns a new image.
    return pictures.decode(_blob)


def _jpeg(image: Image.Image) -> bytes:
    # JPEG encodes ~20x faster than WebP at this size, which keeps a cold unit page well under 300 ms.
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)
def unit_tiles(key: data.StoreKey, model_id: str, layer: str, unit: int, heat: bool) -> dict[str, list[dict]]:
    """{'top': [...], 'bottom': [...], 'quantile': [...]}, each tile {src, caption, source, activation}."""
    rows = data.unit_examples(key, model_id, layer, unit)
    vmax = next((r["activation"] for r in rows if r["kind"] == "top" and r["rank"] == 0), 0.0)
    out: dict[str, list[dict]] = {"top": [], "bottom": [], "quantile": []}
    for r in rows:
        if r.get("image") is None:
            continue
        picture = pictures.crop(_decoded(key, r["image_id"], r["image"]), r["box"], CROP_PX)
        if heat:
            picture = pictures.overlay(picture, pictures.heat_array(r["heat"], r["heat_cells"]), vmax=vmax)
        caption = f"{r['activation']:.3g}"
        if r["kind"] == "quantile" and r["quantile"] is not None:
            caption = f"q{r['quantile'] * 100:g} · {caption}"
        out[r["kind"]].append({"src": html.data_uri(_jpeg(picture)), "caption": caption,
                               "source": r["image_source"] or r["image_id"], "activation": r["activation"]})
    return out
