"""The `dictionary` lens: for a dictionary feature, its direction over the base layer's channels (the channels it
reads most, signed, each a link), its nearest neuron, how often it fires and whether a second seed's dictionary
has it too; for a neuron of a layer with dictionaries, the features whose directions read it most."""

from __future__ import annotations

import streamlit as st

from dashboard import data, html, links
from dashboard.params import UnitRef

NAME = "dictionary"
LABEL = "Dictionary features"
KEEP = ()


@st.cache_data(max_entries=256, ttl=600, show_spinner=False)
def record(key: data.StoreKey, model_id: str, layer: str, unit: int) -> dict | None:
    return data.open_store(*key).feature_record(model_id, layer, unit)


def weights_table(model_id: str, rows: list[dict]) -> str:
    """Signed weights with a bar each and a link to the unit."""
    scale = max((abs(r["weight"]) for r in rows), default=0.0) or 1.0
    body = []
    for r in rows:
        colour = "#b2182b" if r["weight"] > 0 else "#2166ac"
        name = links.unit_id(model_id, r["layer"], r["unit"])
        body.append(f'<tr><td><a href="{html.escape(links.unit_href(model_id, r["layer"], r["unit"]))}" '
                    f'target="_self">{html.escape(name)}</a></td><td style="width:40%"><div style="height:12px;'
                    f'width:{100 * abs(r["weight"]) / scale:.1f}%;background:{colour}"></div></td>'
                    f'<td style="text-align:right">{r["weight"]:+.3f}</td></tr>')
    return f'<table style="width:100%;font-size:14px"><tbody>{"".join(body)}</tbody></table>'


def render(ref: UnitRef) -> None:
    found = record(ref.key, ref.model_id, ref.layer_name, ref.unit)
    if found is None:
        st.info("This unit is neither a dictionary feature nor read by one. Learn a dictionary of its layer with "
                f"`microscope precompute {ref.model_id} --layers {ref.layer_name} --techniques default,dictionary`.")
        return
    if "read_by" in found:
        st.subheader("Features that read this neuron", anchor=False)
        st.caption("Dictionary features whose decoder directions have the largest component (signed) along this "
                   "channel: the features it takes part in.")
        st.html(weights_table(ref.model_id, found["read_by"]))
        return
    d, nearest = found["dictionary"], found["nearest"]
    st.markdown(f"Feature {ref.unit} of the dictionary `{d['name']}` of "
                f"[{d['base_layer']}]({links.href('layer', links.params(ref.model_id, d['base_layer']))}): "
                f"{d['features']:,} features, {d['k']} active per position, explained variance "
                f"{d['explained_variance']:.1%} on held-out positions.")
    facts = [f"active at {found['frequency']:.2%} of positions",
             f"best cosine in the seed-{d['second_seed']} dictionary {found['seed_cosine']:.2f}",
             f"nearest neuron {nearest['unit']} (cosine {nearest['cosine']:.2f})"]
    st.markdown(" · ".join(facts))
    if not found["stable"]:
        st.warning(f"One seed only: no feature of the second dictionary comes within cosine {d['stable_cosine']} of "
                   "this one, so it may be an accident of training rather than a feature of the layer.")
    if nearest["cosine"] < 0.5:
        st.caption("No single neuron matches this feature: its direction spreads over several channels.")
    st.subheader(f"Channels of {d['base_layer']} it reads most", anchor=False)
    st.caption("The feature's decoder direction (unit norm) over the base layer's channels, largest |weight| "
               "first: red raises, blue lowers. Its circuits lens shows the encoder's weights.")
    st.html(weights_table(ref.model_id, found["reads"]))
    st.caption(f"See `microscope unit {ref.model_id} {ref.layer_name} {ref.unit} --json` (`direction`, `dictionary`).")
