"""The frame around every page: navigation, the shared sidebar, embed mode and the store check."""

from __future__ import annotations

from urllib.parse import parse_qs

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from dashboard import data, html, links
from store import StoreError
from store.errors import StoreVersionError, one_line


def pages() -> list:
    """Models, Search and Compare are in the menu; model, layer and unit pages are reached by links (with params)."""
    return [
        st.Page(links.PAGES["models"], title="Models", icon=":material/view_module:", default=True),
        st.Page(links.PAGES["search"], title="Search", icon=":material/search:", url_path="search"),
        st.Page(links.PAGES["compare"], title="Compare", icon=":material/compare:", url_path="compare"),
        st.Page(links.PAGES["model"], title="Model", icon=":material/account_tree:", url_path="model",
                visibility="hidden"),
        st.Page(links.PAGES["layer"], title="Layer", icon=":material/grid_view:", url_path="layer",
                visibility="hidden"),
        st.Page(links.PAGES["unit"], title="Unit", icon=":material/center_focus_strong:", url_path="unit",
                visibility="hidden"),
    ]


def is_embed() -> bool:
    """`&embed=1` (our contract) or Streamlit's own `embed=true`. Streamlit reserves the `embed` parameter and
    hides it from st.query_params, so it is read from the run's raw query string."""
    if st.context.is_embedded:
        return True
    ctx = get_script_run_ctx()
    value = parse_qs(ctx.query_string if ctx else "").get("embed", [""])[-1]
    return value.lower() in ("1", "true")


def open_store() -> data.StoreKey | None:
    """The store's cache key, or None after telling the user what is wrong and how to fix it."""
    try:
        key = data.store_key()
        data.open_store(*key)
        return key
    except data.StoreMissing as missing:
        st.error(f"No Microscope store at `{missing.path}`.", icon=":material/database:")
        st.markdown("Build the demo store (EfficientNet-Lite0 on the photos bundled with scikit-image and "
                    "scikit-learn):")
        st.code("make demo", language="bash")
        st.markdown("or precompute a model of your choice:")
        st.code("microscope precompute efficientnet_lite0.bundled", language="bash")
        st.caption("Or point the `MICROSCOPE_STORE` environment variable at an existing store file.")
    except StoreError as exc:
        st.error(one_line(exc), icon=":material/database:")
        if isinstance(exc, StoreVersionError) and not data.remote_status():
            return None  # the line says how to rebuild it: one instruction, not two
        if data.remote_status():
            st.caption("Nothing has been fetched from it yet. Check the address and the network, or publish a store "
                       "built by this version of Microscope there; this page tries again when reloaded.")
        else:
            st.caption("Rebuild it with `microscope precompute MODEL`, or point `MICROSCOPE_STORE` at another file.")
    return None


def frame(key: data.StoreKey | None) -> None:
    """Embed mode hides all chrome; otherwise the sidebar shows where you are and which store is open."""
    st.html(html.STYLE)
    if is_embed():
        st.html(html.HIDE_CHROME)
        return
    with st.sidebar:
        if key is not None:
            _breadcrumbs(key)
            _store_caption(key)


def _store_caption(key: data.StoreKey) -> None:
    source = data.remote_status()
    if source is None:
        st.caption(f"Store `{key[0]}`  \nbuilt {data.built_at(key)}")
        return
    st.caption(f"Store `{source['location']}`  \nbuilt {data.built_at(key)}, fetched {source['fetched_at']}")
    if source["error"]:
        st.warning(f"{source['error']}. Still showing the store fetched {source['fetched_at']}.",
                   icon=":material/sync_problem:")


def _breadcrumbs(key: data.StoreKey) -> None:
    """Links up the model > layer > unit path of the current URL, for the parts that exist."""
    q = st.query_params
    model = data.model(key, q.get("model", "")) if q.get("model") else None
    if model is None:
        return
    mid = model["model_id"]
    st.caption("You are here")
    st.page_link(links.PAGES["model"], label=mid, icon=":material/account_tree:", query_params=links.params(mid))
    layer = data.layer(key, mid, q.get("layer", "")) if q.get("layer") else None
    if layer is None:
        return
    name = layer["layer"]
    st.page_link(links.PAGES["layer"], label=f"{name} ({layer['units']} units)", icon=":material/grid_view:",
                 query_params=links.params(mid, name))
    unit = q.get("unit", "")
    if unit.isdigit() and int(unit) < layer["units"]:
        st.page_link(links.PAGES["unit"], label=f"unit {int(unit)}", icon=":material/center_focus_strong:",
                     query_params=links.params(mid, name, int(unit)))


def store_replaced(key: data.StoreKey) -> bool:
    try:
        return data.store_key() != key
    except data.StoreMissing:
        return True
