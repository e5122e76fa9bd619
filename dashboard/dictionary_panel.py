"""The layer page's dictionary section: a base layer's dictionaries (links, quality table, the distribution of
their features' stability, the stable features no single neuron matches); for a dictionary layer, its own
quality and a link back to its base layer."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, links

QUALITY = {"layer": "dictionary", "features": "features", "k": "k", "explained_variance": "explained variance",
           "mean_l0": "mean L0", "dead_share": "dead", "dense_share": "dense", "stable_share": "stable (2 seeds)",
           "stability_median": "median best cosine"}
BINS = 20


@st.cache_data(max_entries=64, ttl=600, show_spinner=False)
def dictionaries(key: data.StoreKey, model_id: str) -> list[dict]:
    return data.open_store(*key).dictionaries(model_id)


@st.cache_data(max_entries=32, ttl=600, show_spinner=False)
def stability(key: data.StoreKey, model_id: str, layer: str) -> pd.DataFrame:
    return pd.DataFrame(data.open_store(*key).stability(model_id, layer))


@st.cache_data(max_entries=32, ttl=600, show_spinner=False)
def unmatched(key: data.StoreKey, model_id: str, layer: str) -> list[dict]:
    return data.open_store(*key).unmatched_features(model_id, layer)


def render(key: data.StoreKey, model_id: str, layer: str) -> None:
    every = dictionaries(key, model_id)
    own = [d for d in every if d["layer"] == layer]
    of_base = [d for d in every if d["base_layer"] == layer]
    if not own and not of_base:
        return
    st.subheader("Sparse dictionary" if own else "Dictionaries of this layer", anchor=False)
    if own:
        base = own[0]["base_layer"]
        st.caption(f"The features of a TopK sparse autoencoder of {base}'s activation vectors: each unit here is a "
                   "direction in that layer's channel space. Quality on held-out positions; stability against a "
                   "second dictionary trained with another seed.")
        st.page_link(links.PAGES["layer"], label=f"Base layer {base}", icon=":material/arrow_upward:",
                     query_params=links.params(model_id, base))
    else:
        st.caption("Features learned from this layer's activation vectors (a TopK sparse autoencoder): look at "
                   "them where one neuron answers to several unrelated things.")
        for d in of_base:
            st.page_link(links.PAGES["layer"], label=f"{d['layer']}: {d['features']:,} features",
                         icon=":material/scatter_plot:", query_params=links.params(model_id, d["layer"]))
    table = pd.DataFrame(own or of_base)[list(QUALITY)].rename(columns=QUALITY)
    st.dataframe(table, hide_index=True, column_config={
        name: st.column_config.NumberColumn(format="percent") for name in
        ("explained variance", "dead", "dense", "stable (2 seeds)")})
    for d in own or of_base:
        frame = stability(key, model_id, d["layer"])
        if frame.empty:
            continue
        counts = pd.cut(frame["seed_cosine"].clip(0, 1), [i / BINS for i in range(BINS + 1)], include_lowest=True)
        hist = counts.value_counts(sort=False).rename_axis("best cosine").rename("features").reset_index()
        hist["best cosine"] = hist["best cosine"].map(lambda b: f"{b.right:.2f}")
        st.caption(f"{d['layer']}: each live feature's best decoder cosine in the seed-{d['second_seed']} "
                   f"dictionary; below {d['stable_cosine']} a feature is marked one-seed-only.")
        st.bar_chart(hist, x="best cosine", y="features", height=180)
        lonely = unmatched(key, model_id, d["layer"])
        if lonely:
            shown = [f"[{r['unit']}]({links.unit_href(model_id, d['layer'], r['unit'], view='dictionary')}) "
                     f"({r['channel_cosine']:.2f})" for r in lonely]
            st.caption("Stable features that no single neuron matches (lowest best channel cosine first): "
                       + ", ".join(shown))
