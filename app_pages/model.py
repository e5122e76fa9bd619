"""Model: its layers in network order, what each holds, each linking to its unit gallery."""

import streamlit as st

from dashboard import data, html, links, params

key = data.store_key()
model = params.model(key)
mid = model["model_id"]

st.title(mid, anchor=False)
st.caption("The layers of this model in network order: how many units (channels) each has, its activation "
           "map and receptive field, and how many units were computed. Open a layer to see all its units.")
facts = [f"architecture `{model['arch']}`", f"source `{model['source']}`",
         f"revision `{model['revision'] or '–'}`", f"input {model['input_size']} px"]
st.markdown(" · ".join(facts))
if model["description"]:
    st.caption(model["description"])

rows = []
for layer in data.layers(key, mid):
    rows.append({
        "layer": {"href": links.href("layer", links.params(mid, layer["layer"])), "text": layer["layer"]},
        "alias": layer["alias"] or "",
        "units": f"{layer['units']:,}",
        "map": f"{layer['height']}×{layer['width']}",
        "rf": f"{layer['rf_px']} px",
        "stats": f"{layer['stats_units']:,} / {layer['units']:,}",
        "dataset": f"{layer['dataset_units']:,} / {layer['units']:,}",
        "dead": f"{layer['dead_units']:,}",
    })
if not rows:
    st.info("No layers of this model are stored.")
else:
    st.html(html.table([("layer", "layer"), ("alias", "alias"), ("units", "#units"), ("map", "#map size"),
                        ("rf", "#receptive field"), ("stats", "#stats computed"),
                        ("dataset", "#dataset examples"), ("dead", "#dead units")], rows))
