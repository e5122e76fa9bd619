"""Compare: the units of two layers matched one to one by how alike they respond, and which layers of two models
correspond. State in the URL: `a=MODEL@LAYER&b=MODEL@LAYER`."""

import math

import streamlit as st

from dashboard import compare_view, data, links, url_widgets

PER_PAGE = 60

key = data.store_key()
st.title("Compare layers", anchor=False)
st.caption("Each unit of layer A is paired with one unit of layer B so that the paired units' responses correlate "
           "as much as possible in total (an optimal assignment). The score of a pair is the Pearson correlation "
           "of the two units' spatial-max activations over the same dataset images. Below, linear CKA (Kornblith "
           "et al. 2019) of every layer of one model against every layer of the other shows which layers "
           "correspond.")

sides = {links.side(m["model_id"], layer): f"{m['model_id']} @ {layer}" for m in data.models(key)
         for layer in data.sampled_layers(key, m["model_id"])}
if not sides:
    st.info("No layer of this store has sampled responses to compare. Compute them with "
            "`microscope precompute MODEL --techniques similar` (part of the default techniques).")
    st.stop()
options = list(sides)
default_b = next((s for s in options if s.rsplit("@", 1)[0] != options[0].rsplit("@", 1)[0]),
                 options[min(1, len(options) - 1)])
cols = st.columns(2)
chosen_a, _ = url_widgets.choice(cols[0], "Layer A", sides, "a", options[0], drop_default=False)
chosen_b, _ = url_widgets.choice(cols[1], "Layer B", sides, "b", default_b, drop_default=False)
a, b = tuple(chosen_a.rsplit("@", 1)), tuple(chosen_b.rsplit("@", 1))

result = data.compare_layers(key, *a, *b)
pairs = result["pairs"]
metrics = st.columns(3)
metrics[0].metric("Matched pairs", f"{len(pairs):,}", help=f"{result['units_a']:,} units in A, {result['units_b']:,} "
                  "in B; dead units stay unmatched")
metrics[1].metric(f"Good matches (r ≥ {result['good_match']})", f"{result['share_good']:.0%}",
                  help=f"{result['good']:,} pairs, as a share of the smaller layer's units")
metrics[2].metric("Linear CKA", "n/a" if result["cka"] is None else f"{result['cka']:.3f}",
                  help="1: the two layers' responses carry the same information up to the units' order and scale")
if not pairs:
    st.info("These two layers were shown no dataset images in common: nothing to match.")
else:
    st.subheader("Matched pairs, best first", anchor=False)
    st.caption(f"Left: {links.side(*a)}; right: {links.side(*b)}. Each picture is the unit's feature visualisation "
               "where rendered, else its top dataset crop; click one for its page.")
    pages = max(1, math.ceil(len(pairs) / PER_PAGE))
    page = st.pagination(pages, key="page", bind="query-params")
    compare_view.render_pairs(key, a, b, pairs[(page - 1) * PER_PAGE: page * PER_PAGE])
st.subheader(f"Layer by layer: {a[0]} against {b[0]}", anchor=False)
st.caption("Linear CKA of each pair of layers' responses to the same images, every unit standardised; the pair "
           "compared above is outlined.")
compare_view.cka_map(key, a, b)
