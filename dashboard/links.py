"""The URL scheme, in one place: page files, relative hrefs for HTML blocks, ids and deep links.

Hrefs are relative (`unit?model=...`), as Streamlit's own page links are, so they work under a
`server.baseUrlPath` too: every page lives at the same level (`/`, `/model`, `/layer`, `/unit`, `/search`, `/compare`).
"""

from __future__ import annotations

from urllib.parse import urlencode

PAGES = {
    "models": "app_pages/models.py",
    "model": "app_pages/model.py",
    "layer": "app_pages/layer.py",
    "unit": "app_pages/unit.py",
    "search": "app_pages/search.py",
    "compare": "app_pages/compare.py",
}


def params(model: str, layer: str | None = None, unit: int | None = None, **extra) -> dict[str, str]:
    out = {"model": model}
    if layer is not None:
        out["layer"] = layer
    if unit is not None:
        out["unit"] = str(unit)
    out.update({k: str(v) for k, v in extra.items() if v is not None})
    return out


def href(page: str, query: dict[str, str] | None = None) -> str:
    """A relative link to one of the app's pages, with every value URL-encoded."""
    path = "./" if page == "models" else page
    return f"{path}?{urlencode(query)}" if query else path


def side(model: str, layer: str) -> str:
    """One side of the compare view: `MODEL@LAYER` (layer names never hold '@'; model ids may)."""
    return f"{model}@{layer}"


def compare_params(model_a: str, layer_a: str, model_b: str, layer_b: str) -> dict[str, str]:
    return {"a": side(model_a, layer_a), "b": side(model_b, layer_b)}


def unit_href(model: str, layer: str, unit: int, **extra) -> str:
    return href("unit", params(model, layer, unit, **extra))


def unit_id(model: str, layer: str, unit: int) -> str:
    return f"{model}@{layer}:{unit}"


def deep_link(page_url: str | None, query: dict[str, str], page: str = "unit") -> str:
    """The full URL of this page with `query`; `page_url` is st.context.url (None outside a browser)."""
    base = (page_url or f"http://localhost:8501/{page}").split("?", 1)[0]
    return f"{base}?{urlencode(query)}"
