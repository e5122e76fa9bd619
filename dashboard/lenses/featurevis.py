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
        st.caption(f"{note}. Caption: the {score} on the final image, then the unit's spatial max on it in "
                   "standard deviations of its dataset range (sigma)"
                   + (f"; the unit's top dataset example reaches {top:.3g} (spatial max)." if top else "."))
        st.html(html.examples([{"src": html.data_uri(r["image"]), "caption": _caption(r),
                                "source": f"{technique} {_facet(r)}"} for r in tiles]))
        trust = next((r["trust"] for r in tiles if r.get("trust")), None)
        if trust:
            _trust(trust)
    p = rows[0]["params"]
    st.caption(f"Rendered with the `{p.get('preset')}` preset: {p.get('size')} px {p.get('param')} image, "
               f"{p.get('steps')} Adam steps (lr {p.get('lr')}), {p.get('transforms')} transforms"
               + (f", each step of the channel, negative and diversity images seeing a random window of "
                  f"{p['window']:g} of the model's input side" if p.get("window") and p["window"] < 1 else "")
               + f", seed {p.get('seed')}; run `{rows[0]['run_id']}`. Activations are measured on the whole image.")


def _facet(row: dict) -> str:
    return f"seed {row['facet'] + 1}" if row["technique"] == "channel" else str(row["facet"])


def _caption(row: dict) -> str:
    sigma = row.get("sigma")
    return f"{row['achieved_activation']:.3g}" + (f" · {sigma:+.1f} sd" if sigma is not None else "")


def _apart(value: float, bar: float | None) -> tuple[str, str | None]:
    """Two numbers with as many decimals (two or more) as it takes to tell them apart."""
    if bar is None:
        return f"{value:.2f}", None
    digits = next((d for d in range(2, 6) if f"{value:.{d}f}" != f"{bar:.{d}f}"), 2)
    return f"{value:.{digits}f}", f"{bar:.{digits}f}"


def _trust(t: dict) -> None:
    """How far to trust the channel picture (store/trust.py; README "How far to trust a picture")."""
    parts = []
    if t["ratio_to_top"] is not None:
        parts.append(f"its spatial max is {t['ratio_to_top']:.2g}x the top dataset example's"
                     + (f", {t['sigma']:.1f} standard deviations above the unit's dataset mean"
                        if t["sigma"] is not None else ""))
    if t["seed_agreement"] is not None:
        parts.append(f"the two seeds' pictures agree to the model at {t['seed_agreement']:.2f} "
                     "(correlation of the layer's spatial maxima on them)")
    if t["natural_path"] is not None:
        value, floor = _apart(t["natural_path"], t["natural_floor"])
        parts.append(f"its activation draws on the layer's inputs like the top examples' at {value} (cosine of the "
                     "two paths" + (f"; the top examples among themselves: {floor} at worst)" if floor else ")"))
    if parts:
        st.caption("How far to trust it: " + "; ".join(parts) + ".")
    if t["seeds_disagree"]:
        st.warning("The two seeds' pictures disagree: the model treats them as different images, so neither "
                   "alone shows what the unit wants.", icon=":material/casino:")
    if t["unnatural_path"]:
        st.warning("This picture drives the unit by a path that its top dataset examples do not take: its "
                   "activation comes from other inputs of the layer than any natural image the unit likes "
                   "best draws on (Geirhos et al. 2023).",
                   icon=":material/alt_route:")
