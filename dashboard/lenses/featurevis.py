"""The `featurevis` lens: the images a unit wants to see (channel, neuron, negative, diversity facets)."""

from __future__ import annotations

import streamlit as st

from dashboard import data, html
from dashboard.params import UnitRef

NAME = "featurevis"
LABEL = "Feature visualisation"
KEEP = ()

# technique: (title, what it was optimised for, what its caption's number is)
SECTIONS = {
    "channel": ("Channel", "optimised to raise the unit's mean activation over the whole map", "mean activation"),
    "neuron": ("Neuron", "optimised to raise the unit at the centre position only", "activation at the centre"),
    "negative": ("Negative", "optimised to lower the unit: what it most dislikes",
                 "objective (minus the mean activation)"),
    "diversity": ("Diversity", "several images of the unit, pushed apart so they show different facets",
                  "mean activation"),
}


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)
def _featurevis(key: data.StoreKey, model_id: str, layer: str, unit: int) -> list[dict]:
    return data._store(key).unit_featurevis(model_id, layer, unit)


def render(ref: UnitRef) -> None:
    rows = _featurevis(ref.key, ref.model_id, ref.layer_name, ref.unit)
    if not rows:
        st.info("No feature visualisation is stored for this unit. Render it with "
                f"`microscope precompute {ref.model_id} --layers {ref.layer_name} --units {ref.unit} "
                "--techniques featurevis`.")
        return
    stats = data.unit_stats(ref.key, ref.model_id, ref.layer_name, ref.unit)
    top = stats["max"] if stats else None
    for technique, (title, note, score) in SECTIONS.items():
        tiles = [r for r in rows if r["technique"] == technique]
        if not tiles:
            continue
        st.subheader(title, anchor=False)
        st.caption(f"{note}. Caption: the {score} on the final image"
                   + (f"; the unit's top dataset example reaches {top:.3g} (spatial max)." if top else "."))
        st.html(html.examples([{"src": html.data_uri(r["image"]), "caption": f"{r['achieved_activation']:.3g}",
                                "source": f"{technique} {r['facet']}"} for r in tiles]))
    p = rows[0]["params"]
    st.caption(f"Rendered with the `{p.get('preset')}` preset: {p.get('size')} px {p.get('param')} image, "
               f"{p.get('steps')} Adam steps (lr {p.get('lr')}), {p.get('transforms')} transforms"
               + (f", each step of the channel, negative and diversity images seeing a random window of "
                  f"{p['window']:g} of the model's input side" if p.get("window") and p["window"] < 1 else "")
               + f", seed {p.get('seed')}; run `{rows[0]['run_id']}`. Activations are measured on the whole image.")
